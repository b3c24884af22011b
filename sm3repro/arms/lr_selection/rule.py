"""The selection rule: pick each (optimizer, batch) cell's lr on dev, and say what it still needs.

The grid runs each cell at half-decade learning rates (1e-3, 3e-3, 1e-2, ...). A cell's lr is
the one with the best **dev** macro LAS after the final epoch (test scores never choose
anything); ties go to the smaller lr. While the best lr sits at an end of the cell's grid the
grid is extended by one half-decade step past that end, since the optimum may lie beyond it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

GRID = (0.001, 0.003, 0.01, 0.03, 0.1)  # the selection grid's starting lrs
LADDER_LIMITS = (1e-5, 10.0)  # never extend past these


def half_decade(lr: float) -> int:
    """The lr's position k on the half-decade ladder 10**(k/2), rounded to 1 significant digit
    (..., 0.001, 0.003, 0.01, 0.03, ...)."""
    return round(2 * math.log10(lr))


def ladder_lr(k: int) -> float:
    """The k-th half-decade lr: 10**(k/2) to one significant digit (3.16 -> 3)."""
    value = 10 ** (k / 2)
    exponent = math.floor(math.log10(value))
    return float(f"{round(value / 10**exponent)}e{exponent}")


@dataclass(frozen=True)
class CellChoice:
    optimizer: str
    batch_size: int
    lr: float  # the chosen lr
    dev_las_macro: float
    tried: tuple[float, ...]  # every lr with a finished record, ascending
    extend_to: float | None  # the next lr to run when the best sits at an end, else None
    pending: tuple[float, ...]  # starting-grid lrs without a finished record yet

    @property
    def settled(self) -> bool:
        """Final: the whole starting grid ran and the best lr is not at an end of it."""
        return not self.pending and self.extend_to is None


def choose(scores: pd.DataFrame) -> list[CellChoice]:
    """One choice per (optimizer, batch_size) from rows with columns optimizer, batch_size, lr,
    dev_las_macro (final epoch; NaN for a diverged run, which never wins)."""
    choices = []
    for (optimizer, batch), cell in scores.groupby(["optimizer", "batch_size"], sort=False):
        cell = cell.assign(score=cell["dev_las_macro"].fillna(-math.inf)).sort_values("lr")
        if cell["lr"].duplicated().any():
            raise ValueError(f"{optimizer} batch {batch}: two records for one lr")
        best_score = cell["score"].max()
        best = cell[cell["score"] == best_score].iloc[0]  # ascending lr: ties -> smaller lr
        tried = tuple(float(x) for x in cell["lr"])
        step = +1 if best["lr"] == tried[-1] else -1 if best["lr"] == tried[0] else 0
        candidate = ladder_lr(half_decade(best["lr"]) + step) if step else None
        inside = candidate is not None and LADDER_LIMITS[0] <= candidate <= LADDER_LIMITS[1]
        extend_to = candidate if inside else None
        choices.append(
            CellChoice(
                optimizer=str(optimizer),
                batch_size=int(batch),
                lr=float(best["lr"]),
                dev_las_macro=float(best["dev_las_macro"]),
                tried=tried,
                extend_to=extend_to,
                pending=tuple(lr for lr in GRID if not any(math.isclose(lr, t) for t in tried)),
            )
        )
    return choices


def as_frame(choices: list[CellChoice]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "optimizer": c.optimizer,
                "batch_size": c.batch_size,
                "chosen_lr": c.lr,
                "dev_las_macro": c.dev_las_macro,
                "lrs_tried": " ".join(f"{x:g}" for x in c.tried),
                "settled": c.settled,
                "extend_to": c.extend_to,
                "pending": " ".join(f"{x:g}" for x in c.pending),
            }
            for c in choices
        ]
    )


def missing_lrs(choice: CellChoice | None) -> list[float]:
    """The lrs a cell still has to run: its pending grid points and its extension."""
    if choice is None:
        return list(GRID)
    return sorted({*choice.pending, *([choice.extend_to] if choice.extend_to else [])})


def still_to_run(
    choices: Sequence[CellChoice], cells: Sequence[tuple[str, int]]
) -> list[tuple[tuple[str, int], list[float]]]:
    """((optimizer, batch), lrs to run) for every cell of ``cells`` that is not settled, in
    ``cells``' order (a cell without any finished record runs the whole starting grid)."""
    by_cell = {(c.optimizer, c.batch_size): c for c in choices}
    todo = [(cell, missing_lrs(by_cell.get(cell))) for cell in cells]
    return [(cell, lrs) for cell, lrs in todo if lrs]


def sweep_overrides(optimizer: str, batch: int, lrs: Sequence[float]) -> list[str]:
    """The overrides of the lr grid's sweep that runs ``lrs`` of one cell."""
    # Command-line values of swept keys replace the experiment's sweeper params (Hydra's
    # BasicSweeper keeps the last value per key), so this runs exactly these lrs.
    return [
        "experiment=lr_grid",
        f"optimizer={optimizer}",
        f"batch_size={batch}",
        "optimizer.lr=" + ",".join(repr(float(lr)) for lr in lrs),
    ]


def rerun_command(
    optimizer: str, batch: int, lrs: Sequence[float], overrides: Sequence[str]
) -> str:
    """The command line that runs ``lrs`` of one cell (``overrides``: the grid's own)."""
    return " ".join(
        ["python -m sm3repro.train -m", *sweep_overrides(optimizer, batch, lrs), *overrides]
    )
