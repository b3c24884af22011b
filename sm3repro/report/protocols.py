"""The claims x protocol matrix: every claim judged under each protocol with the same records.

A protocol is an experiment config (its grid of run ids; entries in sm3repro/arms/protocols.py).
A claim whose verdict is the same under every protocol is *robust*; one whose verdict changes is
*protocol-sensitive*. A protocol whose grid has not finished shows ``pending (n of N runs)`` and
no verdict: a partial grid would judge some cells on fewer seeds than others, so the label is
*undetermined*. Only the runs the claims read count (claims.named_optimizers): an optimizer
outside the study joins the protocol's tables without holding its verdicts back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from sm3repro.arms.protocols import PROTOCOLS, Protocol
from sm3repro.report.claims import CLAIMS, judge_all, named_optimizers
from sm3repro.report.judge import ClaimResult
from sm3repro.report.results import Results, RunSet
from sm3repro.report.tables import aggregate
from sm3repro.report.timing import uncontended

# The protocols whose grids the claims' seed-mean checks are judged on: the matrix's columns.
SEED_MEAN_PROTOCOLS = tuple(p for p in PROTOCOLS if p.seed_means)


@dataclass
class ProtocolResult:
    protocol: Protocol
    finished: int  # grid runs the claims read with a finished (completed or diverged) record
    grid: int  # runs of the protocol's grid the claims read
    loaded: RunSet  # the grid's completed runs so far (every optimizer)
    results: list[ClaimResult] | None  # None while the grid is pending
    waiting_for: str | None = None  # what else holds the verdicts back, e.g. the lr selection

    @property
    def complete(self) -> bool:
        return self.results is not None

    def cell(self, number: int) -> str:
        if self.results is None:
            waiting = f"; {self.waiting_for}" if self.waiting_for else ""
            return f"pending ({self.finished} of {self.grid} runs{waiting})"
        return next(r.verdict for r in self.results if r.claim.number == number)

    def result(self, number: int) -> ClaimResult | None:
        if self.results is None:
            return None
        return next(r for r in self.results if r.claim.number == number)


def judge_protocol(
    results: Results, protocol: Protocol, waiting_for: str | None = None
) -> ProtocolResult:
    """The protocol's claim verdicts once the grid runs the claims read have finished and
    nothing else (``waiting_for``) holds them back, else how far it is."""
    finished, grid = results.grid_progress(protocol.experiment, named_optimizers())
    loaded = results.runset(protocol.experiment)
    ready = finished == grid and waiting_for is None
    verdicts = judge_all(aggregate(uncontended(loaded.runs))) if ready else None
    return ProtocolResult(protocol, finished, grid, loaded, verdicts, waiting_for)


def _kind(verdict: str) -> str:
    """``holds`` / ``does not hold`` / ``inconclusive``, without the notes in brackets."""
    return verdict.split(" (", 1)[0]


def robustness(verdicts: Sequence[str | None]) -> str:
    """*robust* when every protocol gives the same verdict, *protocol-sensitive* when they
    differ, *undetermined* while a protocol has no verdict."""
    if any(v is None for v in verdicts):
        return "undetermined"
    return "robust" if len({_kind(v) for v in verdicts}) == 1 else "protocol-sensitive"


def anchor(protocol: Protocol, number: int) -> str:
    return f"{protocol.key}-claim-{number}"


def matrix(results: Sequence[ProtocolResult]) -> pd.DataFrame:
    """One row per claim: its verdict under each protocol and the label across them."""
    rows = []
    for claim in CLAIMS:
        verdicts = [r.cell(claim.number) if r.complete else None for r in results]
        row = {"claim": claim.number}
        for r, verdict in zip(results, verdicts, strict=True):
            row[r.protocol.key] = verdict if verdict is not None else r.cell(claim.number)
        row["across"] = robustness(verdicts)
        rows.append(row)
    return pd.DataFrame(rows)
