"""Typed run records -> one row per run, and their per-epoch curves.

A row holds what identifies the run, every quantity of quantities.py that its record holds (NaN
where it holds none: older records lack newer fields), and what the timing rule reads
(timing.add_timing_columns). The curves are the epoch rows of each run's metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from sm3repro.record.reader import Record
from sm3repro.record.schema import EpochRow, MetricsRow, RunSummary
from sm3repro.report.quantities import QUANTITIES

RECORDED = [q for q in QUANTITIES if q.read is not None]  # the rest come from the curves
IDENTITY = ["run_id", "run_dir", "optimizer", "optimizer_impl", "batch_size", "seed",
            "experiment", "epochs_completed", "finished_at"]  # fmt: skip
# What the timing rule reads besides the quantities (timing.add_timing_columns).
TIMING_INPUTS = ["recorded_others_cpu_percent", "torch_threads", "usable_cores", "train_examples"]
COLUMNS = [*IDENTITY, *(q.name for q in RECORDED), "recorded_contended", *TIMING_INPUTS]
CURVE_KEYS = ["run_id", "optimizer", "batch_size", "seed"]


def _row(record: Record) -> dict[str, Any]:
    s: RunSummary = record.summary  # type: ignore[assignment]  # completed: never None
    r = s.resources
    return {
        "run_id": s.run_id, "run_dir": str(record.path), "optimizer": s.optimizer,
        "optimizer_impl": s.optimizer_impl or None, "batch_size": s.batch_size, "seed": s.seed,
        "experiment": s.experiment, "epochs_completed": s.epochs_completed,
        "finished_at": s.provenance.get("finished_at"),
        **{q.name: q.read(s) for q in RECORDED},  # type: ignore[misc]
        "recorded_contended": None if r is None else r.contended,
        "recorded_others_cpu_percent": None if r is None else r.others_cpu_percent,
        "torch_threads": None if r is None else r.torch_threads,
        "usable_cores": None if r is None else r.usable_cores,
        "train_examples": s.data.get("train_examples"),
    }  # fmt: skip


def run_table(records: Sequence[Record]) -> pd.DataFrame:
    """One row per record (completed, so its summary is typed), numbers as floats."""
    runs = pd.DataFrame([_row(r) for r in records], columns=COLUMNS)
    for col in [q.name for q in RECORDED] + TIMING_INPUTS:
        runs[col] = pd.to_numeric(runs[col], errors="coerce").astype("float64")
    runs = runs.astype({"run_id": "str", "run_dir": "str", "optimizer": "str",
                        "experiment": "str"})  # fmt: skip
    return runs.astype({"batch_size": "int64", "seed": "int64", "epochs_completed": "int64"})


def _epoch_rows(rows: Sequence[MetricsRow]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in row.to_dict().items() if k != "phases"}
        for row in rows
        if isinstance(row, EpochRow)
    ]


def curves_of(
    runs: pd.DataFrame,
    records: Mapping[str, Record],
    metrics: Callable[[str], Sequence[MetricsRow]],
    notes: list[str],
) -> pd.DataFrame:
    """Per-epoch rows of the runs' metrics, keyed by run and its (optimizer, batch, seed);
    a run whose metrics cannot be read gets a note and no curves."""
    folders = {str(record.path): name for name, record in records.items()}
    curves = []
    for run_id, run_dir in runs[["run_id", "run_dir"]].itertuples(index=False):
        try:
            epochs = _epoch_rows(metrics(folders[run_dir]))
        except (OSError, ValueError, TypeError, AttributeError) as err:
            notes.append(f"`{run_id}`: metrics.jsonl unreadable ({err}); no curves for this run.")
            continue
        if epochs:
            curves.append(pd.DataFrame(epochs).assign(run_id=run_id))
    curves = (
        pd.concat(curves, ignore_index=True)
        if curves
        else pd.DataFrame({"run_id": pd.Series(dtype="str")})
    )
    curves = curves.reindex(columns=curves.columns.union(["epoch", "train_loss"], sort=False))
    for col in curves.columns.difference(["run_id", "kind", "contended"]):
        curves[col] = pd.to_numeric(curves[col], errors="coerce")  # a field never recorded: NaN
    curves = curves.drop(columns=["optimizer", "batch_size", "seed"], errors="ignore").merge(
        runs[CURVE_KEYS], on="run_id"
    )
    # a resumed run may log an epoch twice: the later row wins
    return curves.sort_values(["run_id", "epoch"]).drop_duplicates(["run_id", "epoch"], keep="last")
