"""The report's one load: every run record read once, and each experiment's runs as a table.

:class:`Results` reads ``<results>/runs`` through :mod:`sm3repro.record.reader` (one status rule
for everything the report counts) and keeps each run's metrics once read. :meth:`Results.runset`
gives an experiment's completed runs (its grid's run ids, not the labels in records: see
:mod:`sm3repro.run.grid`) as one row each, built from the typed records by the quantities'
entries (quantities.py), with their per-epoch curves; the records it leaves out are listed with
why, and other experiments' records are counted by label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sm3repro.record.reader import (
    UNREADABLE,
    Record,
    finished_count,
    read_metrics,
    read_records,
)
from sm3repro.record.schema import MetricsRow, RunSummary
from sm3repro.report.run_table import curves_of, run_table
from sm3repro.report.timing import Contention, add_timing_columns, contention
from sm3repro.run.grid import grid_run_ids, has_grid

EXCLUDED_COLUMNS = ["run_id", "status", "reason"]


@dataclass
class RunSet:
    """One experiment's completed runs (one row each), their per-epoch curves, and the records
    left out (other experiments' records are counted in ``other_experiments`` instead)."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    excluded: pd.DataFrame
    experiment: str | None = None
    notes: list[str] = field(default_factory=list)
    contention: Contention | None = None  # runs the timing verdicts leave out (timing.py)
    summaries: list[RunSummary] = field(default_factory=list)  # the runs' records, row order
    other_experiments: dict[str, int] = field(default_factory=dict)  # label -> records


class Results:
    """Every run record under ``results_dir/runs``, read once; ``overrides`` are the ones the
    sweeps ran with (they enter the grids' run ids)."""

    def __init__(self, results_dir: str | Path, overrides: Sequence[str] = ()) -> None:
        self.dir = Path(results_dir)
        self.overrides = tuple(overrides)
        self.records: dict[str, Record] = read_records(self.dir)
        self._metrics: dict[str, list[MetricsRow] | Exception] = {}
        self._runsets: dict[str | None, RunSet] = {}

    def metrics(self, run_id: str) -> list[MetricsRow]:
        """The run's metrics rows (read once); raises what reading them raised."""
        if run_id not in self._metrics:
            try:
                self._metrics[run_id] = read_metrics(self.records[run_id].path)
            except (OSError, ValueError, TypeError, AttributeError) as err:
                self._metrics[run_id] = err
        rows = self._metrics[run_id]
        if isinstance(rows, Exception):
            raise rows
        return rows

    def completed(self) -> list[Record]:
        return [r for r in self.records.values() if r.completed]

    def grid_progress(self, experiment: str, optimizers: Collection[str]) -> tuple[int, int]:
        """(finished records, runs) of ``experiment``'s grid points that train ``optimizers``."""
        run_ids = grid_run_ids(experiment, self.overrides, optimizers)
        return finished_count(self.records, run_ids), len(run_ids)

    def reported(self, experiment: str | None = None) -> RunSet:
        """The run set a report of ``experiment`` reads. Without one: the only experiment label
        in the completed records, else ``paper`` if present, else the most frequent."""
        notes = []
        labels = Counter(r.summary.experiment for r in self.completed() if r.summary is not None)
        if experiment is None and len(labels) > 1:
            experiment = "paper" if "paper" in labels else labels.most_common(1)[0][0]
            listed = ", ".join(label for label, _ in labels.most_common())
            notes.append(
                f"Several experiments in the results ({listed}); reporting `{experiment}` "
                "(choose with --experiment)."
            )
        elif experiment is None and len(labels) == 1:
            experiment = next(iter(labels))
        runset = self.runset(experiment)
        return RunSet(**{**runset.__dict__, "notes": [*notes, *runset.notes]})

    def runset(self, experiment: str | None) -> RunSet:
        """``experiment``'s run set (None: every completed run), computed once."""
        if experiment not in self._runsets:
            self._runsets[experiment] = self._load(experiment)
        return self._runsets[experiment]

    def _load(self, experiment: str | None) -> RunSet:
        notes: list[str] = []
        members, excluded, others = self._members(experiment, notes)
        runs = run_table(members)
        runs, duplicates = _latest_per_cell(runs)
        excluded += duplicates
        curves = curves_of(runs, self.records, self.metrics, notes)
        runs = _with_curve_summaries(runs, curves)
        runs = add_timing_columns(runs, curves).reset_index(drop=True)
        by_dir = {str(r.path): r.summary for r in members}
        return RunSet(
            runs=runs,
            curves=curves,
            excluded=pd.DataFrame(excluded, columns=EXCLUDED_COLUMNS),
            experiment=experiment,
            notes=notes,
            contention=contention(runs),
            summaries=[by_dir[d] for d in runs["run_dir"]],
            other_experiments=dict(others),
        )

    def _members(
        self, experiment: str | None, notes: list[str]
    ) -> tuple[list[Record], list[dict], Counter]:
        """(completed member records, excluded rows, other experiments' records by label)."""
        member = self._membership(experiment, notes)
        members, excluded, others = [], [], Counter()
        for record in self.records.values():
            label = record.summary.experiment if record.summary is not None else None
            ours = record.status == UNREADABLE or member(record) or label == experiment
            if not ours:
                others[label] += 1
            elif not record.completed:
                excluded.append(dict(run_id=record.label, status=record.status,
                                     reason=record.reason))  # fmt: skip
            elif member(record):
                members.append(record)
            else:  # labelled with the experiment, but not a point of its grid
                excluded.append(dict(run_id=record.label, status="not in the grid",
                                     reason=f"not in the {experiment} grid"))  # fmt: skip
        return members, excluded, others

    def _membership(self, experiment: str | None, notes: list[str]) -> Callable[[Record], bool]:
        """A test for ``experiment``'s members: its grid's run ids (the folder names), or its
        label when it has no experiment config; with no experiment, every record."""
        if experiment is None:
            return lambda record: True
        if not has_grid(experiment):  # e.g. `default`: single runs, no grid to take ids from
            notes.append(
                f"No experiment config `{experiment}`: runs are chosen by the experiment label "
                "in their records."
            )
            return lambda record: (
                record.summary is not None and record.summary.experiment == experiment
            )
        grid = grid_run_ids(experiment, self.overrides)
        present = {r.run_id for r in self.completed()}
        missing = [run_id for run_id in grid if run_id not in present]
        if missing:
            notes.append(
                f"{len(missing)} of the `{experiment}` grid's {len(grid)} runs have no completed "
                f"record here: {', '.join(f'`{r}`' for r in missing)}."
            )
        in_grid = set(grid)
        return lambda record: record.run_id in in_grid


def _latest_per_cell(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """A grid with more axes than (optimizer, batch, seed), e.g. lr_grid's lr, would count a
    cell twice in the mean: the latest run (by its finish time) is kept, the others listed."""
    order = "finished_at" if runs["finished_at"].notna().any() else "run_id"
    runs = runs.sort_values(order, na_position="first", kind="stable")
    dup = runs.duplicated(["optimizer", "batch_size", "seed"], keep="last")
    reason = "same optimizer, batch size and seed as a later run"
    excluded = [dict(run_id=r, status="duplicate", reason=reason) for r in runs.loc[dup, "run_id"]]
    return runs[~dup], excluded


def _with_curve_summaries(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Per-run curve quantities (the epoch-1 loss, the loss averaged over epochs); the final
    loss falls back to the last epoch's, the runtime in minutes to the seconds'."""
    per_run = curves.groupby("run_id")["train_loss"].agg(
        train_loss_epoch1="first", train_loss_mean="mean", train_loss_last="last"
    )
    runs = runs.merge(per_run, how="left", left_on="run_id", right_index=True)
    runs["train_loss"] = runs["train_loss"].fillna(runs["train_loss_last"])
    runs["runtime_min"] = runs["runtime_min"].fillna(runs["runtime_s"] / 60)
    return runs


def load_runs(
    results_dir: str | Path, experiment: str | None = None, overrides: Sequence[str] = ()
) -> RunSet:
    """The run set a report of ``experiment`` reads from ``results_dir`` (see
    :meth:`Results.reported`)."""
    return Results(results_dir, overrides).reported(experiment)
