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

A run whose SM3 stepped on its eager path (:func:`sm3_ran_eager`) timed that path, not the fused
kernel: wherever runtimes are compared its figures are kept and marked (EAGER_MARK, EAGER_NOTE).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sm3repro.run.resources import CONTENDED_OTHERS_PERCENT, CONTENDED_STEAL_PERCENT

# What a contended run's neighbours distort: left out (NaN) before seed means are taken.
TIMING_COLUMNS = ["runtime_min", "runtime_s", "cpu_percent", "cpu_s_per_1k", "examples_per_s",
                  "epoch_time_s"]  # fmt: skip
RULE = (
    f"other processes took >= {CONTENDED_OTHERS_PERCENT:g}% of the usable cores, or the "
    f"hypervisor stole >= {CONTENDED_STEAL_PERCENT:g}%, during the training loop"
)


# SM3's runtime measures its fused kernel only where that ran: a run whose SM3 stepped with
# eager torch ops timed another implementation. Its figures stay in (no verdict changes), marked.
EAGER_MARK = "†"
EAGER_NOTE = (
    f"{EAGER_MARK} SM3 ran its eager path (fused kernel unavailable or not yet written) in runs "
    "behind the marked timings: they time that path, not SM3's fused kernel; the verdicts use "
    "them as recorded."
)
_SM3_IMPL = "sm3repro.SM3("
# How a record names SM3's fused kernel: impl=fused (what ran, in the config's impl words), or
# kernel=fused-cpp in records written before impl named it (their eager path: kernel=eager).
_SM3_FUSED = {"impl=fused", "kernel=fused-cpp"}


def sm3_ran_eager(optimizer_impl: object) -> bool:
    """Whether a record's SM3 stepped with eager torch ops (``impl=forloop``) instead of its
    fused kernel: its ``optimizer_impl`` names no fused kernel (``impl=forloop`` or ``mixed``;
    older records ``kernel=eager``, or nothing: those written before the fused kernel existed
    ran the eager path). False for other optimizers and missing values."""
    if not isinstance(optimizer_impl, str) or not optimizer_impl.startswith(_SM3_IMPL):
        return False
    arguments = optimizer_impl[len(_SM3_IMPL) :].split(")", 1)[0].split(",")
    return not any(a.strip() in _SM3_FUSED for a in arguments)


def eager_footnote(lines: Iterable[str]) -> list[str]:
    """The eager-path note, as a list of one line, when any of ``lines`` carries its mark."""
    return [EAGER_NOTE] if any(EAGER_MARK in line for line in lines) else []


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
    filled ``cpu_s_per_1k`` (with ``cpu_s_per_1k_derived``)."""
    runs = runs.copy()
    recorded = _column(runs, "resources.contended")
    others = _column(runs, "resources.others_cpu_percent").astype("float64")
    derived_others = runs["run_id"].map(derived_others_percent(curves))
    runs["contention_derived"] = recorded.isna() & derived_others.notna()
    runs["others_cpu_percent"] = others.fillna(derived_others)
    derived = (derived_others >= CONTENDED_OTHERS_PERCENT).astype("boolean")
    derived = derived.mask(derived_others.isna())
    runs["contended"] = recorded.astype("boolean").fillna(derived)  # NA: nothing to tell
    threads = _column(runs, "resources.torch_threads")
    runs["fewer_threads"] = (threads < _column(runs, "resources.usable_cores")).fillna(False)

    # CPU seconds of the training loop: CPU% is over the usable cores and the active runtime.
    cpu_s = _column(runs, "cpu_percent") / 100 * _column(runs, "resources.usable_cores")
    cpu_s = cpu_s * _column(runs, "runtime_s")
    examples = _column(runs, "data.train_examples") * _column(runs, "epochs_completed")
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
            f"Timing verdicts (claims 3 and 4) use uncontended runs only: {self.contended} of "
            f"{self.total} run(s) left out as contended ({RULE})"
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
