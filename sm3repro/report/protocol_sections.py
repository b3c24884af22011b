"""REPORT.md's protocol parts: the arms' tables, the lr figure and choices, the claims matrix.

build.py computes them when the report is the study protocol's (experiment ``paper``) and
render.py places them: the arms before the claims, the matrix at the top of the claims
section, each protocol's evidence lines after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from sm3repro.arms.lr_selection import CellChoice, as_frame, choose
from sm3repro.report.arms import arms_display, arms_table
from sm3repro.report.experiment import config_dir
from sm3repro.report.lr_figure import plot_lr_sensitivity
from sm3repro.report.lr_grid import grid_scores
from sm3repro.report.protocols import (
    PROTOCOLS,
    ProtocolResult,
    evidence_markdown,
    judge_protocol,
    matrix,
    matrix_markdown,
)
from sm3repro.report.tables import has_eager
from sm3repro.report.timing import EAGER_NOTE

LR_FIGURE = "fig_lr_sensitivity"


@dataclass
class ProtocolSections:
    """Markdown blocks for render.py, and the tables behind them for the CSV files."""

    arms: list[str] = field(default_factory=list)  # before "## Claims"
    claims_top: list[str] = field(default_factory=list)  # first thing in "## Claims"
    after_claims: list[str] = field(default_factory=list)  # each protocol's evidence
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def _markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True)


def _choices_section(choices: pd.DataFrame, pending_cells: int) -> list[str]:
    if not len(choices):
        return ["No lr_grid records yet: `python -m sm3repro.train -m experiment=lr_grid`.", ""]
    shown = choices.assign(
        dev_las_macro=choices["dev_las_macro"].map(lambda x: f"{x:.4f}"),
        extend_to=choices["extend_to"].map(lambda x: "–" if pd.isna(x) else f"{x:g}"),
        settled=choices["settled"].map({True: "yes", False: "no (provisional)"}),
    ).rename(
        columns={
            "optimizer": "Optimizer", "batch_size": "Batch", "chosen_lr": "Chosen lr",
            "dev_las_macro": "Dev LAS macro", "lrs_tried": "lrs tried", "settled": "Settled",
            "extend_to": "Extend to", "pending": "Grid lrs pending",
        }
    )  # fmt: skip
    return [
        _markdown(shown),
        "",
        "Chosen on dev macro LAS after the final epoch (ties to the smaller lr); a cell is "
        "settled once its whole starting grid ran and the best lr is not at an end of it, "
        f"else its grid extends by half a decade (Extend to). {pending_cells} cell(s) of the "
        "grid have no finished run yet. `python -m sm3repro.arms.lr_selection` prints the "
        "commands that run what is missing.",
        "",
    ]


def tuned_waiting_for(choices: list[CellChoice], cells: int) -> str | None:
    """Why the tuned-lr arm's verdicts would be provisional: an unsettled lr selection, or a
    tuned_lr.yaml whose lr_table differs from the selection's choices."""
    settled = sum(c.settled for c in choices)
    if settled < cells:
        return f"lr selection: {settled} of {cells} cells settled"
    table = OmegaConf.load(config_dir() / "experiment" / "tuned_lr.yaml").get("lr_table") or {}
    stale = [
        f"{c.optimizer}@{c.batch_size}"
        for c in choices
        if (table.get(c.optimizer) or {}).get(f"b{c.batch_size}") != c.lr
    ]
    if stale:
        return f"tuned_lr.yaml out of date for {', '.join(stale)} (rerun --write-tuned)"
    return None


def build_sections(
    results_dir: Path, figures_dir: Path, overrides: Sequence[str] = ()
) -> tuple[ProtocolSections, list[ProtocolResult]]:
    """Judge every protocol, draw the lr figure, and lay out the protocol parts."""
    scores, cells = grid_scores(results_dir, overrides=overrides)
    choices = choose(scores)
    waiting = {"tuned_lr": tuned_waiting_for(choices, len(cells))}
    results = [
        judge_protocol(results_dir, p, overrides, waiting.get(p.experiment)) for p in PROTOCOLS
    ]
    plot_lr_sensitivity(scores, choices, figures_dir / LR_FIGURE)
    chosen = as_frame(choices)
    arms = arms_table([r for r in results if r.protocol is not PROTOCOLS[0]])
    sections = ProtocolSections(
        tables={"protocol_matrix": matrix(results), "lr_choices": chosen, "arms_las_timing": arms}
    )
    sections.arms = [
        "## Learning rate per optimizer (selection, seed 0)",
        "",
        f"![Dev macro LAS against lr](figures/{LR_FIGURE}.png)",
        "",
        *_choices_section(chosen, len(cells) - len(choices)),
        "## Tables I and II for the protocol arms",
        "",
        _markdown(arms_display(arms)) if len(arms) else "No completed runs of the arms yet.",
        "",
        "Test macro LAS/UAS (final model), seed mean ± std over the n completed runs; runtime "
        "and CPU cost over the n timed of them, the runs the timing verdicts use (contended "
        "runs and runs on fewer torch threads than cores left out, as in the claims); lr = the "
        "cell's learning rate. Ratios are to Adam under the same protocol and batch size.",
        "",
        *([EAGER_NOTE, ""] if has_eager(arms) else []),
    ]
    sections.claims_top = [
        "### Claims × protocol",
        "",
        matrix_markdown(results),
        "",
        "Each verdict links to the numbers behind it. *robust*: the same verdict under all "
        "three protocols; *protocol-sensitive*: the verdict changes with the protocol; "
        "*undetermined*: a protocol's grid has not finished (no verdict is given for it).",
        "",
    ]
    sections.after_claims = [
        "## Claims under each protocol",
        "",
        *[line for r in results for line in evidence_markdown(r)],
    ]
    return sections, results
