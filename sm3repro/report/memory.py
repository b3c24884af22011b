"""The report's "Memory at scale" section, from the memory arm's records (results/memory/).

Everything here is computed from the records: the optimizer's real memory (peak RSS minus SGD's
at the same size and batch), the theoretical state from each record's parameter shapes, the
largest model per budget from the budget search's outcomes, and the verdicts by the rules
stated next to them. ``memory_section(results_dir, out_dir)`` returns the markdown and writes
the figure.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sm3repro.memory.family import theory_state_bytes

MIB = 1024**2
GIB = 1024**3
# Two fresh processes whose optimizer states differ by < 0.1 MiB (SGD and SM3-II at the study's
# size) differ in peak RSS by a few MiB: differences within this margin are not decided.
NOISE_BYTES = 16 * MIB
THEORY_TOLERANCE = 0.10  # Adam and Adagrad: measured within 10% of their state in theory
SCALE_PARAMETERS = 200_000_000  # "at scale": the arm's largest size, at least this many
ORDER = ("sgd", "adagrad", "adam", "adafactor", "sm3_i", "sm3_ii")
LABEL = {"sgd": "SGD", "adagrad": "Adagrad", "adam": "Adam", "adafactor": "Adafactor",
         "sm3_i": "SM3-I", "sm3_ii": "SM3-II"}  # fmt: skip
COLOR = {"sgd": "tab:gray", "adagrad": "tab:orange", "adam": "tab:red", "adafactor": "tab:purple",
         "sm3_i": "tab:cyan", "sm3_ii": "tab:blue"}  # fmt: skip
FIGURE = "memory_at_scale"


# -- records -------------------------------------------------------------------------------
def _records(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a damaged record counts as missing; the arm redoes it
        if isinstance(record, dict) and record.get("status") in ("completed", "out_of_memory"):
            out.append(record)
    return out


def load_grid(results_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per completed grid cell, with its theoretical state and its real memory cost
    (``cost_bytes``: peak RSS minus SGD's at the same width and batch; NaN without SGD)."""
    rows = [
        {
            "optimizer": r["optimizer"],
            "embed_dim": r["embed_dim"],
            "batch_size": r["batch_size"],
            "parameters": r["parameters"],
            "state_bytes": r["state_bytes"],
            "theory_bytes": theory_state_bytes(r["optimizer"], r["parameter_shapes"]),
            "scratch_bytes": r.get("scratch_bytes"),
            "peak_rss_bytes": r["peak_rss_bytes"],
            "peak_virtual_bytes": r.get("peak_virtual_bytes"),
            "cuda_max_memory_allocated": r.get("cuda_max_memory_allocated"),
            "step_s": r["step_s_median"],
            "optimizer_step_s": r["optimizer_step_s_median"],
            "threads": r.get("threads"),
            "git_commit": r.get("provenance", {}).get("git_commit"),
            "cpu_model": r.get("provenance", {}).get("cpu_model"),
        }
        for r in _records(Path(results_dir) / "grid")
        if r["status"] == "completed"
    ]
    grid = pd.DataFrame(rows)
    if grid.empty:
        return grid
    sgd = grid[grid.optimizer == "sgd"].set_index(["embed_dim", "batch_size"])["peak_rss_bytes"]
    keys = pd.MultiIndex.from_frame(grid[["embed_dim", "batch_size"]])
    grid["cost_bytes"] = grid["peak_rss_bytes"].to_numpy() - sgd.reindex(keys).to_numpy()
    return grid.sort_values(["embed_dim", "batch_size", "optimizer"]).reset_index(drop=True)


def load_budget(results_dir: str | os.PathLike) -> pd.DataFrame:
    rows = [
        {
            "optimizer": r["optimizer"],
            "budget_gib": _limit(r) / GIB,
            "embed_dim": r["embed_dim"],
            "parameters": r["parameters"],
            "completed": r["status"] == "completed",
            "message": r.get("message"),
            "peak_rss_bytes": r.get("peak_rss_bytes"),
            "cgroup_peak_bytes": r.get("cgroup_peak_bytes"),
        }
        for r in _records(Path(results_dir) / "budget")
        if _limit(r)
    ]
    return pd.DataFrame(rows)


def _limit(record: dict) -> int | None:
    # The spec carries the limit the cell ran under, even if the arm stopped before annotating.
    return record.get("limit_bytes") or record.get("spec", {}).get("limit_bytes")


def largest_per_budget(budget: pd.DataFrame) -> pd.DataFrame:
    """Per budget and optimizer: the largest size that completed under the limit, and the
    smallest larger size that was stopped by it (the measured bracket)."""
    rows = []
    for (gib, opt), runs in budget.groupby(["budget_gib", "optimizer"]):
        done = runs[runs.completed]
        largest = done.loc[done.parameters.idxmax()] if len(done) else None
        above = runs[~runs.completed]
        if largest is not None:
            above = above[above.parameters > largest.parameters]
        failed = above.loc[above.parameters.idxmin()] if len(above) else None
        rows.append(
            {
                "budget_gib": gib,
                "optimizer": opt,
                "largest_parameters": None if largest is None else int(largest.parameters),
                "largest_embed_dim": None if largest is None else int(largest.embed_dim),
                "next_fails_parameters": None if failed is None else int(failed.parameters),
                "next_fails_message": None if failed is None else failed.message,
            }
        )
    return pd.DataFrame(rows)


# -- judgments -----------------------------------------------------------------------------
def _cell(grid: pd.DataFrame, opt: str, embed_dim: int, batch: int) -> pd.Series | None:
    hit = grid[(grid.optimizer == opt) & (grid.embed_dim == embed_dim) & (grid.batch_size == batch)]
    return hit.iloc[0] if len(hit) else None


CLAIM6_RULE = (
    "At this size, batch 64 and 512: SM3-II's optimizer state bytes below Adam's and "
    "Adagrad's, and its optimizer memory (peak RSS − SGD's, same size and batch) below theirs "
    f"by more than {NOISE_BYTES // MIB} MiB. Does not hold if its optimizer memory is more than "
    f"{NOISE_BYTES // MIB} MiB above either; otherwise inconclusive (within what a fresh "
    "process's peak RSS varies by)."
)


def judge_claim6(grid: pd.DataFrame, embed_dim: int) -> tuple[str, list[str]]:
    """Claim 6 at one width: the verdict and the numbers behind it."""
    results, numbers = [], []
    for batch in sorted(grid.batch_size.unique()):
        sm3 = _cell(grid, "sm3_ii", embed_dim, batch)
        for other in ("adam", "adagrad"):
            them = _cell(grid, other, embed_dim, batch)
            if (
                sm3 is None
                or them is None
                or math.isnan(sm3.cost_bytes)
                or math.isnan(them.cost_bytes)
            ):
                results.append(None)
                numbers.append(f"b{batch} vs {LABEL[other]}: missing")
                continue
            gap = them.cost_bytes - sm3.cost_bytes
            if sm3.state_bytes >= them.state_bytes or gap < -NOISE_BYTES:
                results.append(False)
            else:
                results.append(True if gap > NOISE_BYTES else None)
            numbers.append(
                f"b{batch}: SM3-II {sm3.cost_bytes / MIB:+.1f} MiB vs {LABEL[other]} "
                f"{them.cost_bytes / MIB:+.1f} MiB (state {sm3.state_bytes / MIB:.2f} vs "
                f"{them.state_bytes / MIB:.2f} MiB)"
            )
    if any(r is False for r in results):
        verdict = "does not hold"
    elif not results or any(r is None for r in results):
        verdict = "inconclusive"
    else:
        verdict = "holds"
    return verdict, numbers


def theory_targets(grid: pd.DataFrame) -> pd.DataFrame:
    """At the largest width (if >= 200M parameters): measured optimizer memory against theory.
    Adam and Adagrad: within 10%; SM3: at most its state + 16 MiB."""
    top = grid[grid.embed_dim == grid.embed_dim.max()]
    rows = []
    for _, r in top.iterrows():
        if r.optimizer == "sgd" or r.theory_bytes is None or math.isnan(r.cost_bytes):
            continue
        if r.optimizer in ("adam", "adagrad"):
            target = f"within {THEORY_TOLERANCE:.0%}"
            ok = abs(r.cost_bytes - r.theory_bytes) <= THEORY_TOLERANCE * r.theory_bytes
        elif r.optimizer.startswith("sm3"):
            target = f"≤ state + {NOISE_BYTES // MIB} MiB"
            ok = r.cost_bytes <= r.theory_bytes + NOISE_BYTES
        else:
            target, ok = "(none)", None
        rows.append(
            {
                "optimizer": LABEL.get(r.optimizer, r.optimizer),
                "batch": int(r.batch_size),
                "parameters": f"{r.parameters / 1e6:.1f}M",
                "theory MiB": f"{r.theory_bytes / MIB:.1f}",
                "measured MiB (peak RSS − SGD's)": f"{r.cost_bytes / MIB:.1f}",
                "measured / theory": (
                    f"{r.cost_bytes / r.theory_bytes:.3f}" if r.theory_bytes else "–"
                ),
                "scratch MiB": (
                    f"{r.scratch_bytes / MIB:.1f}" if pd.notna(r.scratch_bytes) else "–"
                ),
                "target": target,
                "met": {True: "yes", False: "no", None: "–"}[ok],
            }
        )
    return pd.DataFrame(rows)


def speed_from(grid: pd.DataFrame, column: str = "optimizer_step_s") -> dict[int, int | None]:
    """Per batch: the smallest width from which SM3-II's median time beats Adam's at every
    larger width too (None if it does not at the largest)."""
    out: dict[int, int | None] = {}
    for batch in sorted(grid.batch_size.unique()):
        since = None
        for embed_dim in sorted(grid.embed_dim.unique(), reverse=True):
            sm3, adam = (_cell(grid, o, embed_dim, batch) for o in ("sm3_ii", "adam"))
            if sm3 is None or adam is None or sm3[column] >= adam[column]:
                break
            since = int(embed_dim)
        out[int(batch)] = since
    return out


# -- figure and tables ---------------------------------------------------------------------
def plot_memory(grid: pd.DataFrame, path_stem: Path) -> Path:
    """Log-log: optimizer memory (peak RSS − SGD's) against parameters, one line per optimizer
    and one panel per batch size; dashed: the optimizer's state in theory."""
    batches = sorted(grid.batch_size.unique())
    fig = Figure(figsize=(5.2 * len(batches), 4.2), layout="constrained")
    axes = fig.subplots(1, len(batches), squeeze=False)[0]
    for ax, batch in zip(axes, batches, strict=True):
        at = grid[grid.batch_size == batch]
        for opt in ORDER:
            rows = at[at.optimizer == opt].sort_values("parameters")
            if rows.empty or opt == "sgd":
                continue
            shown = rows[rows.cost_bytes > 0]  # log scale: a cost at or below SGD's is not drawn
            ax.plot(shown.parameters, shown.cost_bytes / MIB, "o-", color=COLOR[opt],
                    label=LABEL[opt])  # fmt: skip
            theory = rows[rows.theory_bytes > 0]
            ax.plot(theory.parameters, theory.theory_bytes / MIB, "--", color=COLOR[opt],
                    alpha=0.7)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("peak RSS − SGD's (MiB)")
        ax.set_title(f"batch {batch}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(title="solid: measured, dashed: theory", fontsize=8)
    FigureCanvasAgg(fig)
    path = path_stem.with_suffix(".png")
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    os.replace(tmp, path)  # readers never see a half-written figure
    return path


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
            "optimizer": LABEL.get(opt, opt),
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
            row[f"b{batch} memory MiB"] = _mib(None if c is None else c.cost_bytes)
            row[f"b{batch} step ms"] = "–" if c is None else f"{c.step_s * 1e3:.1f}"
            row[f"b{batch} opt step ms"] = "–" if c is None else f"{c.optimizer_step_s * 1e3:.2f}"
        rows.append((embed_dim, ORDER.index(opt) if opt in ORDER else 99, row))
    return pd.DataFrame([r for *_, r in sorted(rows, key=lambda t: t[:2])])


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
        table.setdefault(_budget(r.budget_gib), {})[LABEL.get(r.optimizer, r.optimizer)] = text
    frame = pd.DataFrame(table).T
    frame = frame[[LABEL[o] for o in ORDER if LABEL[o] in frame.columns]].fillna("–")
    frame.insert(0, "budget", frame.index)
    verdicts = []
    for gib, runs in largest.groupby("budget_gib"):
        size = runs.set_index("optimizer")["largest_parameters"].fillna(0)
        if "sm3_ii" not in size:
            continue
        beats = [o for o in ("adam", "adagrad") if o in size and size["sm3_ii"] > size[o]]
        others = [LABEL[o] for o in ("adam", "adagrad") if o in size]
        ok = len(beats) == len(others) and others
        verdicts.append(
            f"{_budget(gib)}: SM3-II trains a strictly larger model than {' and '.join(others)}: "
            f"{'yes' if ok else 'no'} ({size['sm3_ii'] / 1e6:.1f}M vs "
            + ", ".join(
                f"{LABEL[o]} {size[o] / 1e6:.1f}M" for o in ("adam", "adagrad") if o in size
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
def memory_section(
    results_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    link_dir: str | os.PathLike | None = None,
) -> str:
    """The "Memory at scale" markdown; writes the figure into ``out_dir``. Links are relative
    to ``link_dir`` (default: the parent of ``out_dir``, where REPORT.md sits)."""
    grid = load_grid(results_dir)
    lines = ["## Memory at scale", ""]
    if grid.empty:
        return "\n".join([*lines, f"No memory-arm records in `{results_dir}` (`make memory`).", ""])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = plot_memory(grid, out_dir / FIGURE)
    link = os.path.relpath(figure, Path(link_dir) if link_dir else out_dir.parent)
    smallest, largest = int(grid.embed_dim.min()), int(grid.embed_dim.max())
    top_params = grid[grid.embed_dim == largest].parameters.iloc[0]
    threads = ", ".join(str(t) for t in sorted(grid.threads.dropna().unique()))
    commits = ", ".join(sorted({str(c)[:10] for c in grid.git_commit.dropna()}))
    lines += [
        "The study's parser widened until the optimizer's state dominates (`make memory`): "
        "embedding width 50 → "
        f"{largest} (hidden layers stay 200 + 200, EWT's vocabulary and the 48 features), "
        f"{grid.parameters.min() / 1e6:.2f}M → {top_params / 1e6:.1f}M parameters. Each cell "
        "is a fresh process training a fixed number of steps on EWT features; its optimizer "
        "memory is its peak RSS (VmHWM) minus SGD's at the same size and batch, so scratch "
        "and temporaries count. Step times are medians of the steps after the first, "
        f"{threads} thread(s), on a machine shared with other work (contended: read ratios "
        f"side by side). Records: `results/memory/`, code {commits}.",
        "",
        f"![Optimizer memory against parameters]({link})",
        "",
        "Dashed lines: state in theory (Adam 8 B/param, Adagrad 4, SM3 and Adafactor 4 B per "
        "row and per column of each matrix, SGD 0, not drawn on a log scale). A measured point "
        "at or below SGD's is not drawn.",
        "",
        scale_table(grid).to_markdown(index=False, disable_numparse=True),
        "",
    ]
    if top_params >= SCALE_PARAMETERS:
        lines += [
            f"**At {top_params / 1e6:.0f}M parameters, measured against theory** "
            f"(Adam, Adagrad within {THEORY_TOLERANCE:.0%}; SM3 within its state + "
            f"{NOISE_BYTES // MIB} MiB; scratch: SM3's workspace outside its state):",
            "",
            theory_targets(grid).to_markdown(index=False, disable_numparse=True),
            "",
        ]
    budget = load_budget(results_dir)
    if not budget.empty:
        table, verdicts = _budget_markdown(largest_per_budget(budget))
        lines += [
            "**Largest model per memory budget** (batch "
            "64; each size measured: it completes its steps inside a memory cgroup with the "
            "budget as its hard limit, and the next size of a x1.2 ladder is stopped by the "
            "kernel's OOM killer at that limit):",
            "",
            table,
            "",
            *[f"- {v}" for v in verdicts],
            "",
            _limit_note(grid, budget),
            "",
        ]
    lines += [
        "**Claim 6 (SM3 is memory efficient compared to Adam and Adagrad)**, judged at the "
        f"study's size and at the arm's largest. Rule: {CLAIM6_RULE}",
        "",
    ]
    for name, embed_dim in (("at the study's scale", smallest), ("at scale", largest)):
        params = grid[grid.embed_dim == embed_dim].parameters.iloc[0]
        verdict, numbers = judge_claim6(grid, embed_dim)
        lines.append(
            f"- {name} ({params / 1e6:.2f}M parameters): **{verdict}**. {'; '.join(numbers)}."
        )
    since_opt, since_step = speed_from(grid), speed_from(grid, "step_s")
    lines += ["", "**Is SM3-II's step faster than Adam's at scale?** (median times, fresh "
              "processes side by side; faster = lower median)", ""]  # fmt: skip
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
        top = [_cell(grid, o, largest, batch) for o in ("sm3_ii", "adam")]
        if all(c is not None for c in top):
            parts.append(
                f"at {top_params / 1e6:.0f}M: optimizer step SM3-II/Adam "
                f"{top[0].optimizer_step_s / top[1].optimizer_step_s:.2f}x"
            )
        lines.append(f"- batch {batch}: " + "; ".join(parts) + ".")
    lines.append("")
    return "\n".join(lines)
