"""The lr grid's records: each (optimizer, batch) cell's runs at any half-decade lr, by run id.

A cell's config is composed once the way ``python -m sm3repro.train -m experiment=lr_grid``
composes it; setting ``optimizer.lr`` to each ladder value and hashing with
:func:`sm3repro.record.identity.run_id_for` gives the folder a run at that lr writes. So a run
made by any command with the same config counts (the lr 0.01 runs are the paper sweep's seed-0
runs), and extensions past the starting grid are found wherever they stopped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from sm3repro.arms.lr_selection.rule import (
    LADDER_LIMITS,
    CellChoice,
    choose,
    half_decade,
    ladder_lr,
)
from sm3repro.record.identity import run_id_for
from sm3repro.record.reader import Record
from sm3repro.run.grid import grid_configs

EXPERIMENT = "lr_grid"
LADDER = tuple(
    ladder_lr(k) for k in range(half_decade(LADDER_LIMITS[0]), half_decade(LADDER_LIMITS[1]) + 1)
)
SCORE_COLUMNS = ["optimizer", "batch_size", "lr", "run_id", "status", "dev_las_macro"]


def _cells_and_configs(experiment: str, overrides: Sequence[str]) -> dict[tuple[str, int], dict]:
    """(optimizer, batch) -> the cell's resolved config at the experiment's first lr."""
    configs: dict[tuple[str, int], dict] = {}
    for cfg in grid_configs(experiment, overrides):
        configs.setdefault((cfg["optimizer"]["name"], int(cfg["batch_size"])), cfg)
    return configs


def ladder_run_ids(config: dict) -> dict[float, str]:
    """lr -> run id of ``config`` at every ladder lr (1e-5 .. 10)."""
    ids = {}
    for lr in LADDER:
        at_lr = {**config, "optimizer": {**config["optimizer"], "lr": lr}}
        ids[lr] = run_id_for(at_lr)
    return ids


def cell_run_ids(
    experiment: str = EXPERIMENT, overrides: Sequence[str] = ()
) -> dict[tuple[str, int], dict[float, str]]:
    """(optimizer, batch) of every grid cell, in sweep order -> {ladder lr: run id}."""
    configs = _cells_and_configs(experiment, overrides)
    return {cell: ladder_run_ids(config) for cell, config in configs.items()}


def _final_dev_las(record: Record) -> float:
    """A completed run's final-epoch dev macro LAS; NaN for a diverged one (it never wins)."""
    summary = record.summary
    if not record.completed or summary is None or summary.final is None:
        return math.nan
    return float(summary.final.dev.las_macro)


def grid_scores(
    records: Mapping[str, Record], experiment: str = EXPERIMENT, overrides: Sequence[str] = ()
) -> tuple[pd.DataFrame, list[tuple[str, int]]]:
    """(one row per finished record at a ladder lr, every cell of the grid in sweep order).

    A completed run scores its final-epoch dev macro LAS; a diverged one scores NaN (it never
    wins but counts as tried); unfinished or unreadable records are left out (still to run).
    """
    cells = cell_run_ids(experiment, overrides)
    rows = []
    for (optimizer, batch), run_ids in cells.items():
        for lr, run_id in run_ids.items():
            record = records.get(run_id)
            if record is None or not record.finished:
                continue
            values = (optimizer, batch, lr, run_id, record.status, _final_dev_las(record))
            rows.append(dict(zip(SCORE_COLUMNS, values, strict=True)))
    return pd.DataFrame(rows, columns=SCORE_COLUMNS), list(cells)


def choices_from_records(
    records: Mapping[str, Record], overrides: Sequence[str] = ()
) -> tuple[list[CellChoice], pd.DataFrame, list[tuple[str, int]]]:
    """(choices for cells with a finished record, their scores with run ids, every grid cell)."""
    scores, cells = grid_scores(records, overrides=overrides)
    return choose(scores), scores, cells
