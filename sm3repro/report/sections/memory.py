"""The report's "Memory at scale" section: the figure, the tables and the markdown, drawn from
the memory arm's records (arms/memory/verdicts.py) and claim 6's verdicts at its sizes
(memory.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from sm3repro.arms.memory.verdicts import (
    MIB,
    NOISE_BYTES,
    SCALE_PARAMETERS,
    THEORY_TOLERANCE,
    cell,
    largest_per_budget,
    speed_from,
    theory_targets,
)
from sm3repro.optim import catalog
from sm3repro.report.eager import EAGER_MARK, EAGER_NOTE, note_lines
from sm3repro.report.figures import plot_memory
from sm3repro.report.judge import SUBJECT
from sm3repro.report.memory import MemoryJudgement, rule
from sm3repro.report.section import FigureFile, Section, figure_link
from sm3repro.report.verdicts import Judgement

FIGURE = "memory_at_scale"


# -- tables ----------------------------------------------------------------------------------
def _eager(cell: pd.Series) -> bool:
    return bool(cell.get("sm3_eager", False))


def _mib(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x / MIB:.1f}"


def scale_table(grid: pd.DataFrame) -> pd.DataFrame:
    """Per width and optimizer: state bytes per parameter (measured, theory), optimizer memory
    and median step and optimizer-step times per batch size."""
    rows = []
    batches = sorted(grid.batch_size.unique())
    for (embed_dim, opt), cells in grid.groupby(["embed_dim", "optimizer"], sort=False):
        first = cells.iloc[0]
        row = {
            "parameters": f"{first.parameters / 1e6:.2f}M",
            "embed": int(embed_dim),
            "optimizer": catalog.label(opt),
            "state B/param": f"{first.state_bytes / first.parameters:.4f}",
            "theory B/param": (
                f"{first.theory_bytes / first.parameters:.4f}"
                if first.theory_bytes is not None
                else "–"
            ),
        }
        for batch in batches:
            c = cells[cells.batch_size == batch]
            c = c.iloc[0] if len(c) else None
            mark = f" {EAGER_MARK}" if c is not None and _eager(c) else ""
            row[f"b{batch} memory MiB"] = _mib(None if c is None else c.cost_bytes)
            row[f"b{batch} step ms"] = "–" if c is None else f"{c.step_s * 1e3:.1f}{mark}"
            row[f"b{batch} opt step ms"] = (
                "–" if c is None else f"{c.optimizer_step_s * 1e3:.2f}{mark}"
            )
        rows.append((embed_dim, opt, row))
    order = catalog.ordered(grid.optimizer)
    return pd.DataFrame([r for *_, r in sorted(rows, key=lambda t: (t[0], order.index(t[1])))])


def _any_eager(grid: pd.DataFrame) -> bool:
    return "sm3_eager" in grid and bool(grid["sm3_eager"].any())


def _budget(gib: float) -> str:
    return f"{gib:g} GiB" if (gib * 4).is_integer() else f"{gib * 1024:.0f} MiB"


def _budget_markdown(largest: pd.DataFrame) -> tuple[str, list[str]]:
    if largest.empty:
        return "No budget search records.", []
    table = {}
    for _, r in largest.iterrows():
        if r.largest_parameters is None or pd.isna(r.largest_parameters):
            text = "none of the ladder"
        else:
            text = f"{r.largest_parameters / 1e6:.1f}M"
        if r.next_fails_parameters is not None and pd.notna(r.next_fails_parameters):
            text += f" (next, {r.next_fails_parameters / 1e6:.1f}M, fails)"
        else:
            text += " (nothing larger tried fails)"
        table.setdefault(_budget(r.budget_gib), {})[catalog.label(r.optimizer)] = text
    frame = pd.DataFrame(table).T
    labels = [catalog.label(o) for o in catalog.ordered(largest.optimizer)]
    frame = frame[[label for label in labels if label in frame.columns]].fillna("–")
    frame.insert(0, "budget", frame.index)
    verdicts = []
    for gib, runs in largest.groupby("budget_gib"):
        size = runs.set_index("optimizer")["largest_parameters"].fillna(0)
        if "sm3_ii" not in size:
            continue
        beats = [o for o in ("adam", "adagrad") if o in size and size["sm3_ii"] > size[o]]
        others = [catalog.label(o) for o in ("adam", "adagrad") if o in size]
        ok = len(beats) == len(others) and others
        verdicts.append(
            f"{_budget(gib)}: SM3-II trains a strictly larger model than {' and '.join(others)}: "
            f"{'yes' if ok else 'no'} ({size['sm3_ii'] / 1e6:.1f}M vs "
            + ", ".join(
                f"{catalog.label(o)} {size[o] / 1e6:.1f}M" for o in ("adam", "adagrad") if o in size
            )
            + ")"
        )
    return frame.to_markdown(index=False, disable_numparse=True), verdicts


def _limit_note(grid: pd.DataFrame, budget: pd.DataFrame) -> str:
    """Why the limit is a cgroup and not RLIMIT_AS (the records' VmPeak against VmHWM), and
    what the cgroup counts (its own peak against VmHWM)."""
    gap = (grid.peak_virtual_bytes - grid.peak_rss_bytes).dropna()
    note = []
    if not gap.empty:
        note.append(
            "Why a cgroup: an address-space limit (`RLIMIT_AS`, `prlimit --as`) counts memory "
            "reserved but never touched; across the grid's cells VmPeak exceeds the peak RSS by "
            f"{gap.min() / MIB:.0f}-{gap.max() / MIB:.0f} MiB, so such a limit stops runs that "
            "fit and says nothing about resident memory."
        )
    done = budget[budget.completed].dropna(subset=["peak_rss_bytes", "cgroup_peak_bytes"])
    if not done.empty:
        shared = (done.peak_rss_bytes - done.cgroup_peak_bytes).median()
        note.append(
            "The cgroup charges the pages the process itself brings in; pages of shared "
            "libraries other processes already hold are not charged, so a run's peak RSS "
            f"(VmHWM) exceeds its cgroup peak by a median {shared / MIB:.0f} MiB here (the same "
            "for every optimizer, so the comparison between them stands)."
        )
    return " ".join(note)


# -- the section ---------------------------------------------------------------------------
def _intro(grid: pd.DataFrame) -> list[str]:
    largest = int(grid.embed_dim.max())
    top_params = grid[grid.embed_dim == largest].parameters.iloc[0]
    threads = ", ".join(str(t) for t in sorted(grid.threads.dropna().unique()))
    commits = ", ".join(sorted({str(c)[:10] for c in grid.git_commit.dropna()}))
    policies = ", ".join(sorted(grid.omp_wait_policy.unique()))
    return [
        "The study's parser widened until the optimizer's state dominates (`make memory`): "
        "embedding width 50 → "
        f"{largest} (hidden layers stay 200 + 200, EWT's vocabulary and the 48 features), "
        f"{grid.parameters.min() / 1e6:.2f}M → {top_params / 1e6:.1f}M parameters. Each cell "
        "is a fresh process training a fixed number of steps on EWT features; its optimizer "
        "memory is its peak RSS (VmHWM) minus SGD's at the same size and batch, so scratch "
        "and temporaries count. Step times are medians of the steps after the first, "
        f"{threads} thread(s), OpenMP wait policy {policies}; they are only as steady as the "
        "machine was quiet (the records do not say), so read them as ratios side by side. "
        f"Records: `results/memory/`, code {commits}.",
        "",
        figure_link("Optimizer memory against parameters", FIGURE),
        "",
        "Dashed lines: state in theory (Adam 8 B/param, Adagrad 4, SM3 and Adafactor 4 B per "
        "row and per column of each matrix, SGD 0, not drawn on a log scale). A measured point "
        "at or below SGD's is not drawn.",
        "",
        scale_table(grid).to_markdown(index=False, disable_numparse=True),
        "",
        *([EAGER_NOTE, ""] if _any_eager(grid) else []),
    ]


def _theory_lines(grid: pd.DataFrame) -> list[str]:
    top_params = grid[grid.embed_dim == grid.embed_dim.max()].parameters.iloc[0]
    if top_params < SCALE_PARAMETERS:
        return []
    return [
        f"**At {top_params / 1e6:.0f}M parameters, measured against theory** "
        f"(Adam, Adagrad within {THEORY_TOLERANCE:.0%}; SM3 within its state + "
        f"{NOISE_BYTES // MIB} MiB; scratch: SM3's workspace outside its state):",
        "",
        theory_targets(grid).to_markdown(index=False, disable_numparse=True),
        "",
    ]


def _budget_lines(memory: MemoryJudgement) -> list[str]:
    if memory.budget.empty:
        return []
    table, verdicts = _budget_markdown(largest_per_budget(memory.budget))
    return [
        "**Largest model per memory budget** (batch "
        "64; each size measured: it completes its steps inside a memory cgroup with the "
        "budget as its hard limit, and the next size of a x1.2 ladder is stopped by the "
        "kernel's OOM killer at that limit):",
        "",
        table,
        "",
        *[f"- {v}" for v in verdicts],
        "",
        _limit_note(memory.grid, memory.budget),
        "",
    ]


WIDTHS = {"smallest": "the study's size", "largest": "the arm's largest"}  # Tier.width in words


def _claim_lines(memory: MemoryJudgement) -> list[str]:
    """Each claim judged in the memory arm: its rule, and its verdict at each tier's size."""
    lines = []
    for claim in dict.fromkeys(t.claim for t in memory.tiers):
        tiers = [t for t in memory.tiers if t.claim is claim]
        sizes = " and ".join(f"at {WIDTHS[t.tier.width]}" for t in tiers)
        words = claim.statement.split(" (", 1)[0].rstrip(".")
        lines += [f"**Claim {claim.number} ({words})**, judged {sizes}. Rule: {rule(claim)}", ""]
        lines += [
            f"- {t.tier.name} ({t.parameters / 1e6:.2f}M parameters): **{t.verdict}**. "
            f"{'; '.join(t.numbers)}."
            for t in tiers
        ]
        lines.append("")
    return lines


def _speed_lines(grid: pd.DataFrame) -> list[str]:
    largest = int(grid.embed_dim.max())
    top_params = grid[grid.embed_dim == largest].parameters.iloc[0]
    since_opt, since_step = speed_from(grid), speed_from(grid, "step_s")
    speed = []
    for batch in sorted(since_opt):
        parts = []
        for what, since in (
            ("optimizer step", since_opt[batch]),
            ("whole step", since_step[batch]),
        ):
            if since is None:
                parts.append(f"{what}: not faster at the largest size")
            else:
                p = grid[grid.embed_dim == since].parameters.iloc[0]
                parts.append(f"{what}: faster from {p / 1e6:.2f}M parameters (embed {since}) up")
        top = [cell(grid, o, largest, batch) for o in (SUBJECT, "adam")]
        if all(c is not None for c in top):
            parts.append(
                f"at {top_params / 1e6:.0f}M: optimizer step SM3-II/Adam "
                f"{top[0].optimizer_step_s / top[1].optimizer_step_s:.2f}x"
            )
        # a comparison that read an SM3-II cell on its eager path is marked (and noted below)
        sm3 = grid[(grid.optimizer == SUBJECT) & (grid.batch_size == batch)]
        mark = f" {EAGER_MARK}" if _any_eager(sm3) else ""
        speed.append(f"- batch {batch}: " + "; ".join(parts) + f".{mark}")
    return [
        "**Is SM3-II's step faster than Adam's at scale?** (median times, fresh processes side "
        "by side; faster = lower median)",
        "",
        *speed,
        "",
        *note_lines(speed),
    ]


def render(memory: MemoryJudgement, folder: Path) -> Section:
    """``## Memory at scale`` from the memory arm's records in ``folder``."""
    lines = ["## Memory at scale", ""]
    grid = memory.grid
    if grid.empty:
        return Section([*lines, f"No memory-arm records in `{folder}` (`make memory`).", ""])
    lines += [
        *_intro(grid),
        *_theory_lines(grid),
        *_budget_lines(memory),
        *_claim_lines(memory),
        *_speed_lines(grid),
    ]
    return Section(lines, figures={FIGURE: FigureFile(plot_memory(grid), formats=("png",))})


def section(j: Judgement) -> Section | None:
    """``## Memory at scale`` when the results hold the memory arm's folder."""
    return None if j.memory is None else render(j.memory, j.results.dir / "memory")
