"""Learning-rate selection for the tuned-lr arm: pick each (optimizer, batch) cell's lr on dev.

The grid runs each cell at half-decade learning rates (1e-3, 3e-3, 1e-2, ...). A cell's lr is
the one with the best **dev** macro LAS after the final epoch (test scores never choose
anything); ties go to the smaller lr. While the best lr sits at an end of the cell's grid the
grid is extended by one half-decade step past that end, since the optimum may lie beyond it.
"""

from __future__ import annotations

import math
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
