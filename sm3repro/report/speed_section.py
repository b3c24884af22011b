"""The report's speed and CPU section (claims 3 and 4): the tier x protocol matrix, time to
target (the ladder of targets, times with ratios to Adam, the figure of dev macro LAS against
training seconds), and where the interval rule and the old overlap rule disagree."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sm3repro.optim import catalog
from sm3repro.report import speed_claims
from sm3repro.report import time_to_target as ttt
from sm3repro.report.figures import _save
from sm3repro.report.intervals import (
    ALPHA,
    EQUIVALENCE_MARGIN,
    SEED_CAP,
    SEED_GROUP,
    spent_alpha,
)
from sm3repro.report.timing import EAGER_MARK, eager_footnote

FIGURE = "fig_time_to_quality"
GRID_POINTS = 60


def plot_time_to_quality(points: pd.DataFrame, ladder: pd.DataFrame, path_stem: Path) -> None:
    """One panel per (protocol, batch): each optimizer's seed-mean dev LAS on a common time grid
    (each seed's curve interpolated, up to the shortest run), a ±std band, the targets dashed."""
    panels = sorted(points.groupby(["protocol", "batch_size"]).groups)
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.5 * cols, 3.6 * rows))
    for k, (protocol, batch) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        panel = points[(points["protocol"] == protocol) & (points["batch_size"] == batch)]
        for variant in _ordered(panel["variant"].unique()):
            runs = [c.sort_values("train_s") for _, c in panel[panel["variant"] == variant]
                    .groupby("run_id")]  # fmt: skip
            # from the latest first point to the earliest last one: every seed has a value
            start = max(c["train_s"].iloc[0] for c in runs)
            grid = np.linspace(start, min(c["train_s"].iloc[-1] for c in runs), GRID_POINTS)
            ys = np.array([np.interp(grid, c["train_s"], c["dev_las_macro"]) for c in runs])
            mean, std = ys.mean(axis=0), ys.std(axis=0)
            style = catalog.style(variant.removesuffix(ttt.SPARSE))
            if variant.endswith(ttt.SPARSE):
                style["linestyle"] = ":"
            ax.plot(grid, mean, label=ttt.label(variant), **style)
            ax.fill_between(grid, mean - std, mean + std, alpha=0.15, color=style.get("color"))
        for target in ladder[(ladder["protocol"] == protocol) & (ladder["batch_size"] == batch)][
            "target"
        ]:
            ax.axhline(target, color="grey", linewidth=0.6, linestyle="--")
        ax.set_ylim(0.5, 0.9)
        ax.set_title(f"{protocol}, batch {batch}")
        ax.set_xlabel("training seconds (dev evaluation excluded)")
        ax.set_ylabel("dev LAS (macro)")
        ax.legend(fontsize=7)
    fig.suptitle("Dev macro LAS against training time (seed mean ± std; dashed: the targets)")
    fig.tight_layout()
    _save(fig, path_stem)


def _ordered(variants: list[str]) -> list[str]:
    names = catalog.ordered({v.removesuffix(ttt.SPARSE) for v in variants})
    return [v for name in names for v in sorted(variants) if v.removesuffix(ttt.SPARSE) == name]


ANCHOR = "claims-3-and-4-in-tiers-with-stated-confidence"


@dataclass
class SpeedSection:
    summary: list[str]  # under "## Claims": the tier x protocol matrix and a pointer
    markdown: str  # the section itself, after the claims
    tables: dict[str, pd.DataFrame]


def speed_section(results_dir: Path, figures_dir: Path) -> SpeedSection | None:
    """Claims 3 and 4 in tiers, the host calibration's effect and time to target, from every
    protocol's trusted records; None when there are none."""
    curves = ttt.load_curves(results_dir)
    if curves.points.empty:
        return None
    ladder = ttt.targets(curves.points)
    times = ttt.times_to_target(curves.points, ladder)
    compared = ttt.compare_to_reference(times)
    runs = speed_claims.run_table(curves, times)
    found = speed_claims.comparisons(runs)
    matrix = speed_claims.tier_matrix(found)
    disagreements = speed_claims.old_rule_disagreements(runs, found)
    effect = speed_claims.calibration_effect(runs)
    plot_time_to_quality(curves.points, ladder, figures_dir / FIGURE)
    lines = [
        *_tier_lines(matrix, disagreements),
        *_host_lines(effect),
        *_target_lines(curves, compared),
    ]
    summary = [
        "### Claims 3 and 4 by tier",
        "",
        "Speed and CPU judged in three tiers under every protocol, each comparison a ratio "
        f"with a 95% interval ([the rule and every comparison](#{ANCHOR})); this replaces the "
        "earlier two-tier view of claim 3 (dense vs fastest exact), whose overlap rule the "
        "intervals do not back (see the disagreements there).",
        "",
        _marked(matrix, runs).to_markdown(index=False),
        "",
    ]
    tables = {"speed_tiers": matrix, "speed_tier_evidence": speed_claims.evidence(found),
              "speed_rule_disagreements": disagreements, "host_calibration": effect,
              "targets": ladder, "time_to_target": compared, "time_to_target_runs": times}  # fmt: skip
    notes = [line for note in eager_footnote(summary) for line in (note, "")]
    return SpeedSection(summary + notes, "\n".join(lines), tables)


def _marked(matrix: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The matrix, with a mark on protocols whose SM3 runs ran the eager path."""
    eager = runs[runs["eager"]].groupby("protocol").size()
    return matrix.rename(columns={p: f"{p} {EAGER_MARK}" for p in eager.index if p in matrix})


def _tier_lines(matrix: pd.DataFrame, disagreements: pd.DataFrame) -> list[str]:
    return [
        "## Claims 3 and 4 in tiers, with stated confidence",
        "",
        (speed_claims.__doc__ or "").split("\n\n", 1)[1].strip(),
        "",
        matrix.to_markdown(index=False),
        "",
        "Every comparison behind it (ratio of SM3-II's figure to the other's, 95% interval): "
        "`tables/speed_tier_evidence.csv`. Where the old rule (seed mean ± std spreads must not "
        "overlap) and the interval rule disagree on a fixed-epoch comparison:",
        "",
        disagreements.to_markdown(index=False)
        if not disagreements.empty
        else "*none*: both rules leave the same comparisons undecided and decide the rest alike.",
        "",
    ]


def _host_lines(effect: pd.DataFrame) -> list[str]:
    return [
        "### The host's speed",
        "",
        "Every run since the timed arm times a fixed forward+backward of the parser (no "
        "optimizer) at the start and end of each sitting. How much of the runtime spread between "
        "runs of one cell it explains:",
        "",
        effect.to_markdown(index=False)
        if not effect.empty
        else "*pending*: no cell has two calibrated runs yet (the timed arm's second seed block).",
        "",
    ]


def _target_lines(curves: ttt.Curves, compared: pd.DataFrame) -> list[str]:
    resolution = curves.points.groupby("protocol")["resolution"].first()
    looks = range(SEED_GROUP, SEED_CAP + 1, SEED_GROUP)
    return [
        '### Time to target (AlgoPerf\'s "trains faster")',
        "",
        "Training seconds until dev macro LAS first reaches a target; dev evaluation is not "
        "training time, and a run that never reaches it counts as ∞. The targets are fixed from "
        f"the baselines ({', '.join(catalog.label(b) for b in ttt.BASELINES)}) before SM3 is "
        "looked at: per protocol and batch, the baseline with the highest median (over seeds) "
        f"best dev LAS sets the level, and the ladder is "
        f"{', '.join(f'{f:g}' for f in ttt.FRACTIONS)} of it. Runs the timing verdicts do not "
        f"trust are left out ({curves.left_out}: contended, fewer threads than cores, or resumed "
        "across sittings). Resolution: "
        + "; ".join(
            f"{p}: {'dev points within epochs' if r == 'within epochs' else 'one dev point per epoch'}"
            for p, r in resolution.items()
        )
        + ".",
        "",
        "Ratios are to Adam's time (geometric means) with a 95% t interval on log times "
        "(scipy.stats; paired by seed block in the timed arm, Welch's elsewhere): *faster* or "
        "*slower* when the interval excludes 1, *equivalent* when a TOST (statsmodels) puts the "
        f"ratio within ±{EQUIVALENCE_MARGIN:.0%} at α = {ALPHA}, else *undecided*. In the timed "
        f"arm, which `make decide` may grow by groups of {SEED_GROUP} seeds up to {SEED_CAP}, each "
        "look decides at its share of α (Pocock-type alpha spending: "
        f"{', '.join(f'{spent_alpha(n):.4f}' for n in looks)} at "
        f"{', '.join(str(n) for n in looks)} seeds), and its intervals are at that level. A cell "
        "with misses has no finite ratio; it is *slower* (or *faster*) only when all of its runs "
        "miss and none of Adam's do (or the reverse).",
        "",
        f"![time to quality](figures/{FIGURE}.png)",
        "",
        _table(compared[compared["fraction"] == 0.95], "Time to 95% of the best baseline"),
        "",
        "Every rung of the ladder: `tables/time_to_target.csv`; per run: "
        "`tables/time_to_target_runs.csv`; the targets: `tables/targets.csv`.",
        "",
    ]


def _table(compared: pd.DataFrame, title: str) -> str:
    shown = compared.assign(
        median_s=compared["median_s"].map(lambda s: "∞" if math.isinf(s) else f"{s:.0f}"),
        missed=compared["missed"].astype(str) + "/" + compared["n"].astype(str),
    )[["protocol", "batch_size", "optimizer", "missed", "median_s", "ratio_to_adam",
       "verdict_vs_adam"]]  # fmt: skip
    shown.columns = ["Protocol", "Batch", "Optimizer", "Missed", "Median s", "× Adam [95% CI]",
                     "vs Adam"]  # fmt: skip
    return f"**{title}**\n\n" + shown.to_markdown(index=False)
