"""The protocol arms' own parts of the study report: the lr selection (its figure and choices)
and Tables I and II for the arms, one compact table with a protocol column.

The arms table puts the arms beside the study's tables with the quantities the claims read (test
LAS/UAS macro, runtime, CPU%, CPU-s per 1k examples) and each cell's learning rate, taken from
its runs' configs. Scores are over every completed run; runtime and CPU figures only over the
runs the timing verdicts use (uncontended, all cores), so a score-only seed-0 run reused from
the lr grid does not turn up as a slow outlier here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from sm3repro.arms.lr_selection.rule import as_frame
from sm3repro.arms.protocols import STUDY
from sm3repro.optim import catalog
from sm3repro.report.eager import EAGER_NOTE
from sm3repro.report.figures import plot_lr_sensitivity
from sm3repro.report.protocols import ProtocolResult
from sm3repro.report.quantities import DECIMALS
from sm3repro.report.section import FigureFile, Section, figure_link, markdown_table
from sm3repro.report.tables import _round, aggregate, display, has_eager, mark_eager
from sm3repro.report.timing import uncontended
from sm3repro.report.verdicts import Judgement

LR_FIGURE = "fig_lr_sensitivity"
ARM_COLUMNS = {
    "Protocol": "protocol",
    "Optimizer": "optimizer",
    "Batch": "batch_size",
    "lr": "lr",
    "n": "n",
    "n timed": "n_timed",
    "LAS macro": "test_las_macro_mean",
    "UAS macro": "test_uas_macro_mean",
    "Runtime min": "runtime_min_mean",
    "Runtime/Adam": "runtime_vs_adam",
    "CPU%": "cpu_percent_mean",
    "CPU-s/1k ex": "cpu_s_per_1k_mean",
    "CPU-s/1k/Adam": "cpu_s_per_1k_vs_adam",
}
SCORES = ["test_las_macro", "test_uas_macro"]
TIMING = ["runtime_min", "cpu_percent", "cpu_s_per_1k"]  # over the timed runs only
ARM_EAGER = ("Runtime min", "CPU-s/1k ex")  # the cells marked when SM3 ran its eager path


def _lr(run_dir: str) -> float | None:
    try:
        return float(OmegaConf.load(Path(run_dir) / "config.yaml").optimizer.lr)
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _cell_lrs(runs: pd.DataFrame) -> pd.Series:
    """(optimizer, batch) -> its lr(s) as text (one value unless the cell mixes lrs)."""
    lrs = runs.assign(lr=runs["run_dir"].map(_lr))
    return lrs.groupby(["optimizer", "batch_size"])["lr"].agg(
        lambda s: ", ".join(f"{x:g}" for x in sorted(s.dropna().unique())) or "–"
    )


def _arm_rows(result: ProtocolResult) -> pd.DataFrame:
    """One protocol's rows: seed means of scores over every run, of timing over timed runs."""
    runs = result.loaded.runs
    timed = uncontended(runs)  # blanks only timing: scores keep every run
    stats = aggregate(timed)
    stats["n_timed"] = timed.groupby(["optimizer", "batch_size"])["runtime_min"].count()
    cols = [f"{q}_{s}" for q in SCORES + TIMING for s in ("mean", "std")]
    df = stats[["n", "n_timed", "sm3_eager", *cols]].join(_cell_lrs(runs)).reset_index()
    df.insert(0, "protocol", result.protocol.key)
    for col, out in (
        ("runtime_min", "runtime_vs_adam"),
        ("cpu_s_per_1k", "cpu_s_per_1k_vs_adam"),
    ):
        adam = df[df["optimizer"] == "adam"].set_index("batch_size")[f"{col}_mean"]
        df[out] = (df[f"{col}_mean"] / df["batch_size"].map(adam)).round(DECIMALS["ratio"])
    return df


def arms_table(results: Sequence[ProtocolResult]) -> pd.DataFrame:
    """One row per (protocol, optimizer, batch) with completed runs: seed means and ratios."""
    frames = [_arm_rows(r) for r in results if len(r.loaded.runs)]
    if not frames:
        return pd.DataFrame(columns=list(ARM_COLUMNS.values()))
    table = pd.concat(frames, ignore_index=True)
    rank = {name: i for i, name in enumerate(catalog.ordered(table["optimizer"].unique()))}
    rank |= {r.protocol.key: i for i, r in enumerate(results)}
    table = table.sort_values(
        ["protocol", "batch_size", "optimizer"],
        key=lambda s: s if s.name == "batch_size" else s.map(rank),
    )
    keep = [c for c in ARM_COLUMNS.values() if not c.endswith("_mean")]
    keep += [c for c in table.columns if c.endswith(("_mean", "_std"))] + ["sm3_eager"]
    return _round(table[keep], DECIMALS).reset_index(drop=True)


def arms_display(table: pd.DataFrame) -> pd.DataFrame:
    return mark_eager(display(table, ARM_COLUMNS), table, ARM_EAGER)


def _choices_lines(choices: pd.DataFrame, pending_cells: int) -> list[str]:
    if not len(choices):
        return ["No lr_grid records yet: `python -m sm3repro.train -m experiment=lr_grid`.", ""]
    shown = choices.assign(
        optimizer=choices["optimizer"].map(catalog.label),
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
        markdown_table(shown),
        "",
        "Chosen on dev macro LAS after the final epoch (ties to the smaller lr); a cell is "
        "settled once its whole starting grid ran and the best lr is not at an end of it, "
        f"else its grid extends by half a decade (Extend to). {pending_cells} cell(s) of the "
        "grid have no finished run yet. `python -m sm3repro.arms.lr_selection` prints the "
        "commands that run what is missing.",
        "",
    ]


def lr_selection(j: Judgement) -> Section | None:
    """The lr per optimizer: dev macro LAS against lr (seed 0) and each cell's choice."""
    if j.lr is None:
        return None
    chosen = as_frame(j.lr.choices)
    lines = [
        "## Learning rate per optimizer (selection, seed 0)",
        "",
        figure_link("Dev macro LAS against lr", LR_FIGURE),
        "",
        *_choices_lines(chosen, len(j.lr.cells) - len(j.lr.choices)),
    ]
    figure = FigureFile(plot_lr_sensitivity(j.lr.scores, j.lr.choices))
    return Section(lines, tables={"lr_choices": chosen}, figures={LR_FIGURE: figure})


def arms(j: Judgement) -> Section | None:
    """Tables I and II for the protocol arms (every seed-mean protocol but the study's)."""
    if not j.protocols:
        return None
    table = arms_table([r for r in j.protocols if r.protocol is not STUDY])
    lines = [
        "## Tables I and II for the protocol arms",
        "",
        markdown_table(arms_display(table)) if len(table) else "No completed runs of the arms yet.",
        "",
        "Test macro LAS/UAS (final model), seed mean ± std over the n completed runs; runtime "
        "and CPU cost over the n timed of them, the runs the timing verdicts use (contended "
        "runs and runs on fewer torch threads than cores left out, as in the claims); lr = the "
        "cell's learning rate. Ratios are to Adam under the same protocol and batch size.",
        "",
        *([EAGER_NOTE, ""] if has_eager(table) else []),
    ]
    return Section(lines, tables={"arms_las_timing": table})
