"""Dev macro LAS against learning rate: one line per optimizer, one panel per batch size.

Drawn from the lr grid's records (lr_grid.py), with each cell's chosen lr (lr_selection.py)
marked, so the reader sees how flat or sharp each optimizer's optimum is.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from sm3repro.arms.lr_selection import CellChoice
from sm3repro.optim import catalog
from sm3repro.report import published
from sm3repro.report.figures import _save


def plot_lr_sensitivity(
    scores: pd.DataFrame, choices: list[CellChoice], path_stem: Path
) -> list[Path]:
    """``scores``: lr_grid.grid_scores() rows; a diverged run (NaN) leaves a gap in its line."""
    batches = sorted(set(scores["batch_size"]) | set(published.BATCH_SIZES))
    fig = Figure(figsize=(5 * len(batches), 3.8), layout="constrained")
    axes = fig.subplots(1, len(batches), squeeze=False)[0]
    chosen = {(c.optimizer, c.batch_size): c for c in choices}
    for ax, batch in zip(axes, batches, strict=True):
        cell_scores = scores[scores["batch_size"] == batch]
        for opt in catalog.ordered(cell_scores["optimizer"].unique()):
            line = cell_scores[cell_scores["optimizer"] == opt].sort_values("lr")
            (drawn,) = ax.plot(
                line["lr"], line["dev_las_macro"], marker="o", markersize=3,
                label=catalog.label(opt), **catalog.style(opt),
            )  # fmt: skip
            if (choice := chosen.get((opt, batch))) is not None:
                ax.plot(
                    choice.lr, choice.dev_las_macro, marker="*", markersize=13,
                    color=drawn.get_color(), markeredgecolor="black", linestyle="none",
                )  # fmt: skip
        if not ax.lines:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xscale("log")
        ax.set(
            title=f"batch {batch}", xlabel="learning rate", ylabel="dev LAS (macro), final epoch"
        )
        ax.grid(alpha=0.3, which="both")
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside right center")
    fig.suptitle("Dev macro LAS against learning rate (seed 0; ★ = chosen lr)")
    return _save(fig, path_stem)
