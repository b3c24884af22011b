"""Everything the report judges, once, from the loaded results: the reported experiment's claims,
each protocol's, the lr selection the tuned-lr protocol waits for, the tiers of the timing
claims, and the claims' memory-arm tiers. The sections render from this :class:`Judgement`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from sm3repro.arms.lr_selection.records import grid_scores
from sm3repro.arms.lr_selection.rule import CellChoice, choose
from sm3repro.arms.lr_selection.tuned_config import out_of_date
from sm3repro.arms.protocols import STUDY
from sm3repro.report import speed_claims
from sm3repro.report import time_to_target as ttt
from sm3repro.report.claims import judge_all, named_optimizers
from sm3repro.report.judge import ClaimResult
from sm3repro.report.memory import MemoryJudgement, judge_memory
from sm3repro.report.protocols import SEED_MEAN_PROTOCOLS, ProtocolResult, judge_protocol
from sm3repro.report.results import Results, RunSet
from sm3repro.report.tables import aggregate
from sm3repro.report.timing import uncontended


@dataclass
class LrSelection:
    """The lr grid's records, every cell of its grid, and each cell's choice so far."""

    scores: pd.DataFrame
    cells: list[tuple[str, int]]
    choices: list[CellChoice]


@dataclass
class Speed:
    """The timing claims in tiers (speed_claims.py) from every protocol's trusted runs."""

    curves: ttt.Curves
    ladder: pd.DataFrame  # the targets
    times: pd.DataFrame  # per run and rung
    compared: pd.DataFrame  # per cell and rung, against Adam
    runs: pd.DataFrame  # per run: every tier's figure
    found: list[speed_claims.Comparison]
    matrix: pd.DataFrame  # claim x tier (x implementation) rows, a verdict per protocol

    @property
    def eager_protocols(self) -> set[str]:
        """The protocols (speed labels) whose SM3 runs ran the eager path."""
        return set(self.runs.loc[self.runs["eager"].astype(bool), "protocol"])


@dataclass
class Judgement:
    results: Results
    reported: RunSet  # the reported experiment's runs
    stats: pd.DataFrame  # their seed statistics as recorded (the tables)
    claims: list[ClaimResult]  # judged with contended timings left out
    protocols: list[ProtocolResult]  # the seed-mean protocols; empty unless the study's report
    lr: LrSelection | None  # the study's report only
    speed: Speed | None  # the study's report with trusted timed runs only
    memory: MemoryJudgement | None  # when the results hold the memory arm's records

    @property
    def study_report(self) -> bool:
        return self.reported.experiment == STUDY.experiment


def lr_waiting_for(lr: LrSelection) -> str | None:
    """Why the verdicts of a protocol whose lrs come from the selection would be provisional:
    an unsettled selection, or a tuned_lr.yaml whose lr_table differs from its choices. Only
    the cells of optimizers a claim reads count."""
    named = named_optimizers()
    cells = [cell for cell in lr.cells if cell[0] in named]
    choices = [c for c in lr.choices if c.optimizer in named]
    settled = sum(c.settled for c in choices)
    if settled < len(cells):
        return f"lr selection: {settled} of {len(cells)} cells settled"
    stale = out_of_date(choices)
    if stale:
        return f"tuned_lr.yaml out of date for {', '.join(stale)} (rerun --write-tuned)"
    return None


def judge_speed(results: Results) -> Speed | None:
    """The tiers from every protocol's trusted records; None when there are none."""
    curves = ttt.load_curves(results)
    if curves.points.empty:
        return None
    ladder = ttt.targets(curves.points)
    times = ttt.times_to_target(curves.points, ladder)
    runs = speed_claims.run_table(curves, times)
    found = speed_claims.comparisons(runs)
    return Speed(curves, ladder, times, ttt.compare_to_reference(times), runs, found,
                 speed_claims.tier_matrix(found))  # fmt: skip


def judge_everything(results: Results, experiment: str | None = None) -> Judgement:
    """Judge once what every section shows (see the module doc)."""
    reported = results.reported(experiment)
    stats = aggregate(reported.runs)
    claims = judge_all(aggregate(uncontended(reported.runs)))  # timing: quiet runs only
    memory_dir = results.dir / "memory"
    memory = judge_memory(memory_dir) if memory_dir.is_dir() else None
    if reported.experiment != STUDY.experiment:
        return Judgement(results, reported, stats, claims, [], None, None, memory)
    scores, cells = grid_scores(results.records, overrides=results.overrides)
    lr = LrSelection(scores, cells, choose(scores))
    waiting = lr_waiting_for(lr)
    protocols = [
        judge_protocol(results, p, waiting if p.waits_for_lr_selection else None)
        for p in SEED_MEAN_PROTOCOLS
    ]
    return Judgement(results, reported, stats, claims, protocols, lr, judge_speed(results), memory)
