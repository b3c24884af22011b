"""Timing that means something: contended runs left out, CPU cost per 1,000 examples.

A run is *contended* when other processes (or other tenants, as CPU steal) took a share of the
usable cores during its training loop; its runtime and CPU figures measure the neighbours as
much as the optimizer, so timing verdicts use uncontended runs only. Records written before the
flag existed carry per-epoch ``cpu_percent`` (ours) and ``system_cpu_percent`` (system-wide, same
0-100 scale over the usable cores): others' share is their difference, judged by the same
threshold. Steal was not recorded then, so only others' CPU can flag those records.

A run that used fewer torch threads than it had usable cores (score-only selection runs take one
thread so that other work can go on beside them) measured another setup: its timing is left out
of the verdicts too.

With torch threads pinned to the usable cores every optimizer keeps them busy (CPU% ~ 99), so
CPU% is the thread count, not a property of the optimizer; CPU-seconds per 1,000 training
examples (process CPU time of the training loop / examples trained x 1000) is the cost that
differs between optimizers. Older records get it from CPU% x usable cores x runtime.

Which columns are timings is the quantities' own flag (quantities.py); which claims the rule
touches, the claims' (claims.timing_claims).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sm3repro.report.claims import claims_text, timing_claims
from sm3repro.report.quantities import TIMING_COLUMNS
from sm3repro.run.resources import CONTENDED_OTHERS_PERCENT, CONTENDED_STEAL_PERCENT

RULE = (
    f"other processes took >= {CONTENDED_OTHERS_PERCENT:g}% of the usable cores, or the "
    f"hypervisor stole >= {CONTENDED_STEAL_PERCENT:g}%, during the training loop"
)


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs else pd.Series(np.nan, index=runs.index, dtype="float64")


def derived_others_percent(curves: pd.DataFrame) -> pd.Series:
    """Per run: others' CPU share, system CPU% - ours, averaged over epochs by epoch time."""
    need = {"run_id", "cpu_percent", "system_cpu_percent", "epoch_time_s"}
    if not need <= set(curves.columns):
        return pd.Series(dtype="float64")
    rows = curves.dropna(subset=list(need - {"run_id"}))
    others = (rows["system_cpu_percent"] - rows["cpu_percent"]).clip(lower=0)
    weighted = (others * rows["epoch_time_s"]).groupby(rows["run_id"]).sum()
    return weighted / rows.groupby("run_id")["epoch_time_s"].sum()


def add_timing_columns(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """``runs`` plus ``contended``, ``contention_derived``, ``others_cpu_percent`` and a
    filled ``cpu_s_per_1k`` (with ``cpu_s_per_1k_derived``).

    Reads the runs table's ``recorded_contended``, ``recorded_others_cpu_percent``,
    ``torch_threads``, ``usable_cores``, ``train_examples`` and ``epochs_completed`` columns
    (what the records say, NaN where they say nothing).
    """
    runs = runs.copy()
    recorded = _column(runs, "recorded_contended")
    others = _column(runs, "recorded_others_cpu_percent").astype("float64")
    derived_others = runs["run_id"].map(derived_others_percent(curves))
    runs["contention_derived"] = recorded.isna() & derived_others.notna()
    runs["others_cpu_percent"] = others.fillna(derived_others)
    derived = (derived_others >= CONTENDED_OTHERS_PERCENT).astype("boolean")
    derived = derived.mask(derived_others.isna())
    runs["contended"] = recorded.astype("boolean").fillna(derived)  # NA: nothing to tell
    threads = _column(runs, "torch_threads")
    runs["fewer_threads"] = (threads < _column(runs, "usable_cores")).fillna(False)

    # CPU seconds of the training loop: CPU% is over the usable cores and the active runtime.
    cpu_s = _column(runs, "cpu_percent") / 100 * _column(runs, "usable_cores")
    cpu_s = cpu_s * _column(runs, "runtime_s")
    examples = _column(runs, "train_examples") * _column(runs, "epochs_completed")
    per_1k = _column(runs, "cpu_s_per_1k").astype("float64")
    runs["cpu_s_per_1k_derived"] = per_1k.isna() & (cpu_s / examples).notna()
    runs["cpu_s_per_1k"] = per_1k.fillna(1000 * cpu_s / examples)
    return runs


@dataclass(frozen=True)
class Contention:
    """How many runs the timing verdicts left out, and how their flags were obtained."""

    total: int
    contended: int
    fewer_threads: int  # uncontended, but on fewer torch threads than usable cores
    unknown: int  # no flag and no per-epoch figures to derive one from
    derived: int  # flag derived from per-epoch CPU% (older records)
    per_1k_derived: int

    def note(self) -> str:
        kept = self.total - self.contended - self.fewer_threads
        text = (
            f"Timing verdicts ({claims_text(timing_claims())}) use uncontended runs only: "
            f"{self.contended} of {self.total} run(s) left out as contended ({RULE})"
        )
        if self.fewer_threads:
            text += (
                f", and {self.fewer_threads} that used fewer torch threads than usable cores "
                "(score-only runs)"
            )
        text += (
            f"; the runtimes and CPU costs in the claims' evidence are averaged over the other "
            f"{kept}, while the tables show every run as recorded."
        )
        if self.derived:
            text += (
                f" For {self.derived} older record(s) the flag is derived from their per-epoch "
                "system CPU% minus their own (steal was not recorded then)."
            )
        if self.unknown:
            text += f" {self.unknown} run(s) recorded nothing to tell; they are kept."
        if self.per_1k_derived:
            text += (
                f" CPU-s/1k for {self.per_1k_derived} older record(s) is computed from CPU% x "
                "usable cores x runtime / (training examples x epochs)."
            )
        return text


def uncontended(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (with add_timing_columns' columns) with the timing of contended runs blanked,
    so seed means of it are over quiet runs only: what the claims are judged on."""
    masked = runs.copy()
    cols = [c for c in TIMING_COLUMNS if c in masked]
    left_out = masked["contended"].fillna(False).astype(bool) | masked["fewer_threads"]
    masked.loc[left_out, cols] = np.nan
    return masked


def contention(runs: pd.DataFrame) -> Contention:
    """How many of ``runs`` (with add_timing_columns' columns) the timing verdicts leave out."""
    contended = runs["contended"].fillna(False).astype(bool)
    return Contention(
        total=len(runs),
        contended=int(contended.sum()),
        fewer_threads=int((runs["fewer_threads"] & ~contended).sum()),
        unknown=int(runs["contended"].isna().sum()),
        derived=int(runs["contention_derived"].sum()),
        per_1k_derived=int(runs["cpu_s_per_1k_derived"].sum()),
    )
