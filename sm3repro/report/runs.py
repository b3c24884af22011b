"""Run records -> one DataFrame row per completed run of an experiment, plus per-epoch curves.

Reads ``<results>/runs/<run_id>/{summary.json,metrics.jsonl}`` as the training pipeline writes
them and never raises on a bad record: it lists it among the excluded runs instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sm3repro.report.experiment import grid_run_ids, has_grid
from sm3repro.report.timing import Contention, add_timing_columns, contention

# Flattened summary.json field -> the short name used in tables and claims.
RUN_COLUMNS = {
    "final.train_loss": "train_loss",
    "final.train_accuracy": "train_accuracy",
    "final.test.las_macro": "test_las_macro",
    "final.test.uas_macro": "test_uas_macro",
    "final.test.las_micro": "test_las_micro",
    "final.test.uas_micro": "test_uas_micro",
    "resources.cpu_percent": "cpu_percent",
    "resources.cpu_s_per_1k_examples": "cpu_s_per_1k",  # older records: see timing.py
    "resources.runtime_min": "runtime_min",
    "resources.runtime_s": "runtime_s",
    "resources.peak_rss_mb": "peak_rss_mb",
    "resources.optimizer_state_bytes": "optimizer_state_bytes",
    "resources.n_parameters": "n_parameters",
    "resources.examples_per_s": "examples_per_s",
    "resources.epoch_time_s_mean": "epoch_time_s",
}
# Every column the report reads; a record lacking one gets NaN there instead of a crash.
RECORD_COLUMNS = [
    *["run_id", "run_dir", "optimizer", "optimizer_impl", "batch_size", "seed"],
    *["experiment", "group", *RUN_COLUMNS],
]
# Derived per run from metrics.jsonl: the epoch-1 loss (claim 1) and the loss averaged over
# all epochs, a stand-in for "converges more slowly" (claim 2).
CURVE_COLUMNS = ["train_loss_epoch1", "train_loss_mean"]
VALUES = [c for c in RUN_COLUMNS.values() if c != "runtime_s"] + CURVE_COLUMNS


@dataclass
class Runs:
    """Completed runs (one row each), their per-epoch curves, and the runs left out."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    excluded: pd.DataFrame
    experiment: str | None = None
    notes: list[str] = field(default_factory=list)
    contention: Contention | None = None  # runs the timing verdicts leave out (timing.py)


def _read_summary(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    if not isinstance(summary, dict):
        raise ValueError("summary.json is not a JSON object")
    return summary


def _read_completed(results_dir: Path) -> tuple[list[dict], list[dict]]:
    """(summaries of completed runs, excluded rows for every other record)."""
    kept, excluded = [], []
    run_dirs = sorted(p for p in (Path(results_dir) / "runs").glob("*") if p.is_dir())
    for run_dir in run_dirs:
        try:
            summary = _read_summary(run_dir)
        except (OSError, ValueError) as err:  # missing, truncated or not JSON
            excluded.append(
                dict(run_id=run_dir.name, status="unreadable", reason=f"summary.json: {err}")
            )
            continue
        status = summary.get("status")
        if status != "completed":
            reason = summary.get("reason") or ""
            excluded.append(
                dict(run_id=summary.get("run_id", run_dir.name), status=str(status), reason=reason)
            )
            continue
        if not summary.get("optimizer") or summary.get("batch_size") is None:
            excluded.append(
                dict(run_id=run_dir.name, status="unreadable", reason="no optimizer/batch_size")
            )
            continue
        summary.setdefault("run_id", run_dir.name)
        summary["run_dir"] = str(run_dir)
        kept.append(summary)
    return kept, excluded


def _members(
    runs: pd.DataFrame, experiment: str, overrides: Sequence[str], notes: list[str]
) -> pd.Series:
    """Which rows belong to ``experiment``: its grid's run ids (the folder names)."""
    if not has_grid(experiment):  # e.g. `default`: single runs, no grid to take ids from
        notes.append(
            f"No experiment config `{experiment}`: runs are chosen by the experiment label in "
            "their records."
        )
        return runs["experiment"] == experiment
    grid = grid_run_ids(experiment, overrides)
    folders = runs["run_dir"].map(lambda d: Path(d).name)  # a record's folder is its run id
    present = set(folders)
    missing = [run_id for run_id in grid if run_id not in present]
    if missing:
        notes.append(
            f"{len(missing)} of the `{experiment}` grid's {len(grid)} runs have no completed "
            f"record here: {', '.join(f'`{r}`' for r in missing)}."
        )
    return folders.isin(grid)


def _curves(runs: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Per-epoch rows of metrics.jsonl, keyed by run and its (optimizer, batch, seed)."""
    curves = []
    for run_id, run_dir in runs[["run_id", "run_dir"]].itertuples(index=False):
        try:
            metrics = pd.read_json(Path(run_dir) / "metrics.jsonl", lines=True)
        except (OSError, ValueError) as err:
            notes.append(f"`{run_id}`: metrics.jsonl unreadable ({err}); no curves for this run.")
            continue
        if "kind" in metrics and "epoch" in metrics:
            curves.append(metrics[metrics["kind"] == "epoch"].assign(run_id=run_id))
    curves = (
        pd.concat(curves, ignore_index=True)
        if curves
        else pd.DataFrame({"run_id": pd.Series(dtype="str")})
    )
    curves = curves.reindex(columns=curves.columns.union(["epoch", "train_loss"], sort=False))
    keys = runs[["run_id", "optimizer", "batch_size", "seed"]]
    curves = curves.drop(columns=["optimizer", "batch_size", "seed"], errors="ignore").merge(
        keys, on="run_id"
    )
    # a resumed run may log an epoch twice: the later row wins
    return curves.sort_values(["run_id", "epoch"]).drop_duplicates(["run_id", "epoch"], keep="last")


def load_runs(
    results_dir: Path, experiment: str | None = None, overrides: Sequence[str] = ()
) -> Runs:
    """The completed runs of ``experiment`` under ``results_dir/runs``, and the ones left out.

    Without ``experiment``: the only experiment label in the records, else ``paper`` if
    present, else the most frequent. ``overrides``: see :func:`grid_run_ids`.
    """
    kept, excluded = _read_completed(results_dir)
    notes: list[str] = []
    runs = pd.json_normalize(kept)
    runs = runs.reindex(columns=runs.columns.union(RECORD_COLUMNS, sort=False))  # tolerate gaps
    runs["experiment"] = runs["experiment"].fillna(runs.get("group")).fillna("default")
    runs = runs.astype({"run_id": "str", "run_dir": "str", "optimizer": "str", "experiment": "str"})

    # One experiment at a time: a smoke sweep and the paper grid must not be averaged together.
    experiments = runs["experiment"].value_counts()
    if experiment is None and len(experiments) > 1:
        experiment = "paper" if "paper" in experiments else str(experiments.index[0])
        notes.append(
            f"Several experiments in the results ({', '.join(experiments.index)}); reporting `{experiment}` (choose with --experiment)."
        )
    elif experiment is None and len(experiments) == 1:
        experiment = str(experiments.index[0])
    if experiment is not None:
        member = _members(runs, experiment, overrides, notes)
        excluded += [
            dict(
                run_id=r,
                status="other experiment",
                reason=f"experiment {e}" if e != experiment else f"not in the {e} grid",
            )
            for r, e in runs.loc[~member, ["run_id", "experiment"]].itertuples(index=False)
        ]
        runs = runs[member]

    # A grid with more axes than (optimizer, batch, seed), e.g. lr_grid's lr, would count a
    # cell twice in the mean: keep the latest run.
    order = "provenance.finished_at" if "provenance.finished_at" in runs else "run_id"
    runs = runs.sort_values(order, na_position="first")
    dup = runs.duplicated(["optimizer", "batch_size", "seed"], keep="last")
    excluded += [
        dict(
            run_id=r,
            status="duplicate",
            reason="same optimizer, batch size and seed as a later run",
        )
        for r in runs.loc[dup, "run_id"]
    ]
    runs = runs[~dup].rename(columns=RUN_COLUMNS)
    runs["batch_size"] = runs["batch_size"].astype("int64")
    runs["runtime_min"] = runs["runtime_min"].fillna(runs["runtime_s"] / 60)

    curves = _curves(runs, notes)
    # Per-run curve summaries; the final loss falls back to the last epoch's if missing.
    per_run = curves.groupby("run_id")["train_loss"].agg(
        train_loss_epoch1="first", train_loss_mean="mean", train_loss_last="last"
    )
    runs = runs.merge(per_run, how="left", left_on="run_id", right_index=True)
    runs["train_loss"] = runs["train_loss"].fillna(runs["train_loss_last"])
    runs = add_timing_columns(runs, curves)  # contention flags, CPU-s per 1k examples

    excluded = pd.DataFrame(excluded, columns=["run_id", "status", "reason"])
    return Runs(runs.reset_index(drop=True), curves, excluded, experiment, notes, contention(runs))
