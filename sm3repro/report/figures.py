"""Per-epoch curves (seed mean with a ±std band), one panel per metric and batch size."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sm3repro.io import atomic_write_bytes
from sm3repro.optim import catalog
from sm3repro.report import published


def _save(fig: Figure, path_stem: Path) -> list[Path]:
    """PNG and PDF beside each other, each written whole (readers never see half a figure)."""
    FigureCanvasAgg(fig)  # render with Agg, without touching pyplot's global backend
    paths = []
    for ext in ("png", "pdf"):
        path = path_stem.with_suffix(f".{ext}")
        buffer = io.BytesIO()
        # No creation date in the PDF: regenerating the same report leaves the files unchanged.
        metadata = {"CreationDate": None} if ext == "pdf" else None
        fig.savefig(buffer, format=ext, dpi=150, bbox_inches="tight", metadata=metadata)
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def plot_curves(
    curves: pd.DataFrame, metrics: dict[str, str], title: str, path_stem: Path
) -> list[Path]:
    """One panel per (metric, batch size): seed-mean line with a ±std band per optimizer.

    ``metrics`` maps a column of ``curves`` to its axis label; every optimizer in ``curves``
    is drawn, in the report's optimizer order.
    """
    batches = sorted(curves["batch_size"].unique()) or published.BATCH_SIZES
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
            for opt in names:
                if stats is None or (opt, bs) not in stats.index.droplevel("epoch"):
                    continue
                s = stats.loc[(opt, bs)].dropna(subset=["mean"])
                std = s["std"].fillna(0)  # one seed: no band
                (line,) = ax.plot(
                    s.index,
                    s["mean"],
                    marker="o",
                    markersize=3,
                    label=catalog.label(opt),
                    **catalog.style(opt),
                )
                ax.fill_between(
                    s.index, s["mean"] - std, s["mean"] + std, alpha=0.15, color=line.get_color()
                )
            if not ax.lines:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            ax.set(title=f"batch {bs}", xlabel="epoch", ylabel=ylabel)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
    handles = {}  # one legend for all panels: label -> first line drawn with it
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside right center")
    fig.suptitle(title)
    return _save(fig, path_stem)
