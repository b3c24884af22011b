"""The report's figures, each drawn into a matplotlib Figure that the builder saves (:func:`save`).

Per-epoch curves (seed mean with a ±std band, one panel per metric and batch size), dev macro LAS
against the learning rate, dev macro LAS against training seconds, and the memory arm's optimizer
memory against the parameter count.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sm3repro import study
from sm3repro.arms.lr_selection.rule import CellChoice
from sm3repro.io import atomic_write_bytes
from sm3repro.optim import catalog
from sm3repro.report import time_to_target as ttt

MIB = 1024**2
TIME_GRID_POINTS = 60


def save(fig: Figure, path_stem: Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """The figure in each format beside each other, each written whole (readers never see half
    a figure)."""
    FigureCanvasAgg(fig)  # render with Agg, without touching pyplot's global backend
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        path = path_stem.with_suffix(f".{ext}")
        buffer = io.BytesIO()
        # No creation date in the PDF: regenerating the same report leaves the files unchanged.
        metadata = {"CreationDate": None} if ext == "pdf" else None
        fig.savefig(buffer, format=ext, dpi=150, bbox_inches="tight", metadata=metadata)
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def _legend_outside(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for all panels: each label's first line, right of the panels."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside right center")


def _curve_panel(ax: Axes, stats: pd.DataFrame | None, names: list[str], bs: int) -> None:
    for opt in names:
        if stats is None or (opt, bs) not in stats.index.droplevel("epoch"):
            continue
        s = stats.loc[(opt, bs)].dropna(subset=["mean"])
        std = s["std"].fillna(0)  # one seed: no band
        (line,) = ax.plot(s.index, s["mean"], marker="o", markersize=3, label=catalog.label(opt),
                          **catalog.style(opt))  # fmt: skip
        ax.fill_between(
            s.index, s["mean"] - std, s["mean"] + std, alpha=0.15, color=line.get_color()
        )
    if not ax.lines:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def plot_curves(curves: pd.DataFrame, metrics: dict[str, str], title: str) -> Figure:
    """One panel per (metric, batch size): seed-mean line with a ±std band per optimizer.

    ``metrics`` maps a column of ``curves`` to its axis label; every optimizer in ``curves``
    is drawn, in the report's optimizer order.
    """
    batches = sorted(curves["batch_size"].unique()) or list(study.BATCH_SIZES)
    names = catalog.ordered(curves["optimizer"].unique())
    fig = Figure(figsize=(5 * len(batches), 3.6 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), len(batches), squeeze=False)
    for row, (col, ylabel) in enumerate(metrics.items()):
        stats = (
            curves.groupby(["optimizer", "batch_size", "epoch"])[col].agg(["mean", "std"])
            if col in curves
            else None
        )
        for ax, bs in zip(axes[row], batches, strict=True):
            _curve_panel(ax, stats, names, bs)
            ax.set(title=f"batch {bs}", xlabel="epoch", ylabel=ylabel)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
    _legend_outside(fig, list(axes.flat))
    fig.suptitle(title)
    return fig


def plot_lr_sensitivity(scores: pd.DataFrame, choices: list[CellChoice]) -> Figure:
    """Dev macro LAS against learning rate, one line per optimizer and one panel per batch size,
    each cell's chosen lr starred. ``scores``: the lr grid's rows (lr_selection.records); a
    diverged run (NaN) leaves a gap in its line."""
    batches = sorted(set(scores["batch_size"]) | set(study.BATCH_SIZES))
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
    _legend_outside(fig, list(axes))
    fig.suptitle("Dev macro LAS against learning rate (seed 0; ★ = chosen lr)")
    return fig


def _ordered_variants(variants: list[str]) -> list[str]:
    names = catalog.ordered({v.removesuffix(ttt.SPARSE) for v in variants})
    return [v for name in names for v in sorted(variants) if v.removesuffix(ttt.SPARSE) == name]


def _time_panel(ax: Axes, panel: pd.DataFrame, targets: pd.Series) -> None:
    for variant in _ordered_variants(list(panel["variant"].unique())):
        runs = [c.sort_values("train_s") for _, c in panel[panel["variant"] == variant]
                .groupby("run_id")]  # fmt: skip
        # from the latest first point to the earliest last one: every seed has a value
        start = max(c["train_s"].iloc[0] for c in runs)
        grid = np.linspace(start, min(c["train_s"].iloc[-1] for c in runs), TIME_GRID_POINTS)
        ys = np.array([np.interp(grid, c["train_s"], c["dev_las_macro"]) for c in runs])
        mean, std = ys.mean(axis=0), ys.std(axis=0)
        style = catalog.style(variant.removesuffix(ttt.SPARSE))
        if variant.endswith(ttt.SPARSE):
            style["linestyle"] = ":"
        ax.plot(grid, mean, label=ttt.label(variant), **style)
        ax.fill_between(grid, mean - std, mean + std, alpha=0.15, color=style.get("color"))
    for target in targets:
        ax.axhline(target, color="grey", linewidth=0.6, linestyle="--")


def plot_time_to_quality(points: pd.DataFrame, ladder: pd.DataFrame) -> Figure:
    """One panel per (protocol, batch): each optimizer's seed-mean dev LAS on a common time grid
    (each seed's curve interpolated, up to the shortest run), a ±std band, the targets dashed;
    a sparse-rows variant dotted."""
    panels = sorted(points.groupby(["protocol", "batch_size"]).groups)
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.5 * cols, 3.6 * rows))
    for k, (protocol, batch) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        panel = points[(points["protocol"] == protocol) & (points["batch_size"] == batch)]
        at = ladder[(ladder["protocol"] == protocol) & (ladder["batch_size"] == batch)]
        _time_panel(ax, panel, at["target"])
        ax.set_ylim(0.5, 0.9)
        ax.set_title(f"{protocol}, batch {batch}")
        ax.set_xlabel("training seconds (dev evaluation excluded)")
        ax.set_ylabel("dev LAS (macro)")
        ax.legend(fontsize=7)
    fig.suptitle("Dev macro LAS against training time (seed mean ± std; dashed: the targets)")
    fig.tight_layout()
    return fig


def plot_memory(grid: pd.DataFrame) -> Figure:
    """Log-log: optimizer memory (peak RSS − SGD's) against parameters, one line per optimizer
    and one panel per batch size; dashed: the optimizer's state in theory."""
    batches = sorted(grid.batch_size.unique())
    fig = Figure(figsize=(5.2 * len(batches), 4.2), layout="constrained")
    axes = fig.subplots(1, len(batches), squeeze=False)[0]
    for ax, batch in zip(axes, batches, strict=True):
        at = grid[grid.batch_size == batch]
        for opt in catalog.ordered(at.optimizer):
            rows = at[at.optimizer == opt].sort_values("parameters")
            if rows.empty or opt == "sgd":
                continue
            shown = rows[rows.cost_bytes > 0]  # log scale: a cost at or below SGD's is not drawn
            color = catalog.style(opt).get("color")
            ax.plot(shown.parameters, shown.cost_bytes / MIB, "o-", color=color,
                    label=catalog.label(opt))  # fmt: skip
            theory = rows[rows.theory_bytes > 0]
            ax.plot(theory.parameters, theory.theory_bytes / MIB, "--", color=color,
                    alpha=0.7)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("peak RSS − SGD's (MiB)")
        ax.set_title(f"batch {batch}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(title="solid: measured, dashed: theory", fontsize=8)
    return fig
