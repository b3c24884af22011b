"""The memory arm's records (results/memory/) read back, and what they measure.

Everything here is computed from the records: the optimizer's real memory (peak RSS minus SGD's
at the same size and batch), the theoretical state from each record's parameter shapes, the
largest model per budget from the budget search's outcomes, measured memory against theory, and
from which size SM3-II's step beats Adam's. The report judges claim 6 on them
(sm3repro/report/memory.py) and draws its "Memory at scale" section from them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from sm3repro.arms.memory.family import theory_state_bytes
from sm3repro.optim import catalog
from sm3repro.record.implementation import sm3_ran_eager

MIB = 1024**2
GIB = 1024**3
# Two fresh processes whose optimizer states differ by < 0.1 MiB (SGD and SM3-II at the study's
# size) differ in peak RSS by a few MiB: differences within this margin are not decided.
NOISE_BYTES = 16 * MIB
THEORY_TOLERANCE = 0.10  # Adam and Adagrad: measured within 10% of their state in theory
SCALE_PARAMETERS = 200_000_000  # "at scale": the arm's largest size, at least this many


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
            "sm3_eager": sm3_ran_eager(r.get("optimizer_impl")),  # its step times: marked
            "threads": r.get("threads"),
            "omp_wait_policy": r.get("omp_wait_policy") or "default",
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


# -- what the records measure --------------------------------------------------------------
def cell(grid: pd.DataFrame, opt: str, embed_dim: int, batch: int) -> pd.Series | None:
    hit = grid[(grid.optimizer == opt) & (grid.embed_dim == embed_dim) & (grid.batch_size == batch)]
    return hit.iloc[0] if len(hit) else None


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
                "optimizer": catalog.label(r.optimizer),
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
            sm3, adam = (cell(grid, o, embed_dim, batch) for o in ("sm3_ii", "adam"))
            if sm3 is None or adam is None or sm3[column] >= adam[column]:
                break
            since = int(embed_dim)
        out[int(batch)] = since
    return out
