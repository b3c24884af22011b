"""Claim 6 in the memory arm: judged at each of its tiers' sizes (claims.py) from the arm's records.

At one width, for batch 64 and 512, SM3-II against each optimizer of the claim's ``below``: a
part *fails* when SM3-II's state is not below the other's, or its optimizer memory (peak RSS
minus SGD's) is more than the noise margin above; it *passes* when that memory is below by more
than the margin; otherwise it is undecided. The verdict is judge.verdict_of over the parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sm3repro.arms.memory.verdicts import MIB, NOISE_BYTES, cell, load_budget, load_grid
from sm3repro.optim import catalog
from sm3repro.report.claims import CLAIMS
from sm3repro.report.judge import MEMORY_ARM, SUBJECT, Claim, Tier, verdict_of


def rule(claim: Claim) -> str:
    """The memory arm's rule for ``claim``, in words."""
    others = " and ".join(f"{catalog.label(o)}'s" for o in claim.below)
    return (
        f"At this size, batch 64 and 512: {catalog.label(SUBJECT)}'s optimizer state bytes "
        f"below {others}, and its optimizer memory (peak RSS − SGD's, same size and batch) below "
        f"theirs by more than {NOISE_BYTES // MIB} MiB. Does not hold if its optimizer memory is "
        f"more than {NOISE_BYTES // MIB} MiB above either; otherwise inconclusive (within what a "
        "fresh process's peak RSS varies by)."
    )


def _part(sm3: pd.Series, them: pd.Series) -> bool | None:
    gap = them.cost_bytes - sm3.cost_bytes
    if sm3.state_bytes >= them.state_bytes or gap < -NOISE_BYTES:
        return False
    return True if gap > NOISE_BYTES else None


def judge_at(grid: pd.DataFrame, embed_dim: int, below: tuple[str, ...]) -> tuple[str, list[str]]:
    """SM3-II against each of ``below`` at one width: the verdict and the numbers behind it."""
    parts, numbers = [], []
    for batch in sorted(grid.batch_size.unique()):
        sm3 = cell(grid, SUBJECT, embed_dim, batch)
        for other in below:
            them = cell(grid, other, embed_dim, batch)
            if (
                sm3 is None
                or them is None
                or math.isnan(sm3.cost_bytes)
                or math.isnan(them.cost_bytes)
            ):
                parts.append(None)
                numbers.append(f"b{batch} vs {catalog.label(other)}: missing")
                continue
            parts.append(_part(sm3, them))
            numbers.append(
                f"b{batch}: {catalog.label(SUBJECT)} {sm3.cost_bytes / MIB:+.1f} MiB vs "
                f"{catalog.label(other)} {them.cost_bytes / MIB:+.1f} MiB (state "
                f"{sm3.state_bytes / MIB:.2f} vs {them.state_bytes / MIB:.2f} MiB)"
            )
    return verdict_of(parts), numbers


@dataclass(frozen=True)
class MemoryTierResult:
    claim: Claim
    tier: Tier
    embed_dim: int
    parameters: int
    verdict: str
    numbers: tuple[str, ...]


@dataclass
class MemoryJudgement:
    """The memory arm's grid and budget records, and the claims judged at its tiers' sizes."""

    grid: pd.DataFrame  # arms.memory.verdicts.load_grid; empty without records
    budget: pd.DataFrame
    tiers: list[MemoryTierResult]


def _width(grid: pd.DataFrame, tier: Tier) -> int:
    return int(grid.embed_dim.min() if tier.width == "smallest" else grid.embed_dim.max())


def judge_memory(memory_dir: Path) -> MemoryJudgement:
    """Every claim's memory-arm tiers judged on the records under ``memory_dir``."""
    grid = load_grid(memory_dir)
    if grid.empty:
        return MemoryJudgement(grid, pd.DataFrame(), [])
    tiers = []
    for claim in CLAIMS:
        for tier in claim.tiers_judged_by(MEMORY_ARM):
            embed_dim = _width(grid, tier)
            parameters = int(grid[grid.embed_dim == embed_dim].parameters.iloc[0])
            verdict, numbers = judge_at(grid, embed_dim, claim.below)
            tiers.append(MemoryTierResult(claim, tier, embed_dim, parameters, verdict,
                                          tuple(numbers)))  # fmt: skip
    return MemoryJudgement(grid, load_budget(memory_dir), tiers)
