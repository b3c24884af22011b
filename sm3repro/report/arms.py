"""Tables I and II for the protocol arms, as one compact table with a protocol column.

The study protocol's own Tables I and II stay above; this table puts the arms beside it with
the quantities the claims read (test LAS/UAS macro, runtime, CPU%, CPU-s per 1k examples) and
each cell's learning rate, taken from its runs' configs. Scores are over every completed run;
runtime and CPU figures only over the runs the timing verdicts use (uncontended, all cores), so
a score-only seed-0 run reused from the lr grid does not turn up as a slow outlier here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from sm3repro.optim import catalog
from sm3repro.report.protocols import ProtocolResult
from sm3repro.report.tables import DECIMALS, _round, aggregate, display, mark_eager
from sm3repro.report.timing import uncontended

ARM_COLUMNS = {
    "Protocol": "protocol",
    "Optimizer": "optimizer",
    "Batch": "batch_size",
    "lr": "lr",
    "n": "n",
    "n timed": "n_timed",
    "LAS macro": "test_las_macro_mean",
    "UAS macro": "test_uas_macro_mean",
    "Runtime min": "runtime_min_mean",
    "Runtime/Adam": "runtime_vs_adam",
    "CPU%": "cpu_percent_mean",
    "CPU-s/1k ex": "cpu_s_per_1k_mean",
    "CPU-s/1k/Adam": "cpu_s_per_1k_vs_adam",
}
SCORES = ["test_las_macro", "test_uas_macro"]
TIMING = ["runtime_min", "cpu_percent", "cpu_s_per_1k"]  # over the timed runs only
ARM_EAGER = ("Runtime min", "CPU-s/1k ex")  # the cells marked when SM3 ran its eager path


def _lr(run_dir: str) -> float | None:
    try:
        return float(OmegaConf.load(Path(run_dir) / "config.yaml").optimizer.lr)
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _cell_lrs(runs: pd.DataFrame) -> pd.Series:
    """(optimizer, batch) -> its lr(s) as text (one value unless the cell mixes lrs)."""
    lrs = runs.assign(lr=runs["run_dir"].map(_lr))
    return lrs.groupby(["optimizer", "batch_size"])["lr"].agg(
        lambda s: ", ".join(f"{x:g}" for x in sorted(s.dropna().unique())) or "–"
    )


def arms_table(results: Sequence[ProtocolResult]) -> pd.DataFrame:
    """One row per (protocol, optimizer, batch) with completed runs: seed means and ratios."""
    frames = []
    for result in results:
        runs = result.loaded.runs
        if not len(runs):
            continue
        timed = uncontended(runs)  # blanks only timing: scores keep every run
        stats = aggregate(timed)
        stats["n_timed"] = timed.groupby(["optimizer", "batch_size"])["runtime_min"].count()
        cols = [f"{q}_{s}" for q in SCORES + TIMING for s in ("mean", "std")]
        df = stats[["n", "n_timed", "sm3_eager", *cols]].join(_cell_lrs(runs)).reset_index()
        df.insert(0, "protocol", result.protocol.key)
        for col, out in (
            ("runtime_min", "runtime_vs_adam"),
            ("cpu_s_per_1k", "cpu_s_per_1k_vs_adam"),
        ):
            adam = df[df["optimizer"] == "adam"].set_index("batch_size")[f"{col}_mean"]
            df[out] = (df[f"{col}_mean"] / df["batch_size"].map(adam)).round(DECIMALS["ratio"])
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(ARM_COLUMNS.values()))
    table = pd.concat(frames, ignore_index=True)
    rank = {name: i for i, name in enumerate(catalog.ordered(table["optimizer"].unique()))}
    rank |= {r.protocol.key: i for i, r in enumerate(results)}
    table = table.sort_values(
        ["protocol", "batch_size", "optimizer"],
        key=lambda s: s if s.name == "batch_size" else s.map(rank),
    )
    keep = [c for c in ARM_COLUMNS.values() if not c.endswith("_mean")]
    keep += [c for c in table.columns if c.endswith(("_mean", "_std"))] + ["sm3_eager"]
    return _round(table[keep], DECIMALS).reset_index(drop=True)


def arms_display(table: pd.DataFrame) -> pd.DataFrame:
    return mark_eager(display(table, ARM_COLUMNS), table, ARM_EAGER)
