"""The report's speed and CPU section (the timing claims): where their tiers' verdicts come from
(the matrix is in the summary), where the interval rule and the old overlap rule disagree, the
host's speed, and time to target (the ladder of targets, times with ratios to Adam, the figure of
dev macro LAS against training seconds)."""

from __future__ import annotations

import math

import pandas as pd

from sm3repro.optim import catalog
from sm3repro.report import speed_claims
from sm3repro.report import time_to_target as ttt
from sm3repro.report.claims import claims_text
from sm3repro.report.figures import plot_time_to_quality
from sm3repro.report.intervals import (
    ALPHA,
    EQUIVALENCE_MARGIN,
    SEED_CAP,
    SEED_GROUP,
    spent_alpha,
)
from sm3repro.report.section import FigureFile, Section, anchor_of, figure_link
from sm3repro.report.verdicts import Judgement

FIGURE = "fig_time_to_quality"
TIERED_TEXT = claims_text([c.number for c in speed_claims.TIERED])  # "claims 3 and 4"
TITLE = f"{TIERED_TEXT.capitalize()} in tiers, with stated confidence"
ANCHOR = anchor_of(TITLE)  # the summary's tier rows link here


def section(j: Judgement) -> Section | None:
    """Claims 3 and 4 in tiers, the host calibration's effect and time to target, from every
    protocol's trusted records; None when there are none."""
    if j.speed is None:
        return None
    speed = j.speed
    disagreements = speed_claims.old_rule_disagreements(speed.runs, speed.found)
    effect = speed_claims.calibration_effect(speed.runs)
    lines = [
        *_tier_lines(disagreements),
        *_host_lines(effect),
        *_target_lines(speed.curves, speed.compared),
    ]
    tables = {"speed_tiers": speed.matrix, "speed_tier_evidence": speed_claims.evidence(speed.found),
              "speed_rule_disagreements": disagreements, "host_calibration": effect,
              "targets": speed.ladder, "time_to_target": speed.compared,
              "time_to_target_runs": speed.times}  # fmt: skip
    figure = FigureFile(plot_time_to_quality(speed.curves.points, speed.ladder))
    return Section(lines, tables=tables, figures={FIGURE: figure})


def _tier_lines(disagreements: pd.DataFrame) -> list[str]:
    return [
        f"## {TITLE}",
        "",
        (speed_claims.__doc__ or "").split("\n\n", 1)[1].strip(),
        "",
        "The verdict of each tier under each protocol is a row of the [summary](#summary) "
        "(`tables/speed_tiers.csv`); every comparison behind it (ratio of SM3-II's figure to the "
        "other's, 95% interval): `tables/speed_tier_evidence.csv`. Where the old rule (seed mean "
        "± std spreads must not overlap) and the interval rule disagree on a fixed-epoch "
        "comparison:",
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
        figure_link("time to quality", FIGURE),
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
