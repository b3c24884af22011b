"""The claims x protocol matrix: every claim judged under each protocol with the same records.

A protocol is an experiment config (its grid of run ids). A claim whose verdict is the same
under every protocol is *robust*; one whose verdict changes is *protocol-sensitive*. A protocol
whose grid has not finished shows ``pending (n of N runs)`` and no verdict: a partial grid
would judge some cells on fewer seeds than others, so the label is *undetermined*.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sm3repro.record.folder import FINISHED
from sm3repro.report.claims import CLAIMS, judge_all
from sm3repro.report.experiment import grid_run_ids
from sm3repro.report.judge import ClaimResult
from sm3repro.report.runs import Runs, load_runs
from sm3repro.report.tables import aggregate
from sm3repro.report.timing import eager_footnote, uncontended


@dataclass(frozen=True)
class Protocol:
    key: str  # the matrix column and anchor prefix
    experiment: str  # conf/experiment/<experiment>.yaml
    title: str


PROTOCOLS = (
    Protocol("study", "paper", "Study protocol: lr 0.01, dropout 0.5"),
    Protocol("tuned_lr", "tuned_lr", "Tuned lr: each cell at its dev-chosen lr"),
    Protocol("no_dropout", "no_dropout", "No dropout: lr 0.01, model.dropout=0"),
)


@dataclass
class ProtocolResult:
    protocol: Protocol
    finished: int  # grid runs with a finished (completed or diverged) record
    grid: int  # runs in the protocol's grid
    loaded: Runs  # the grid's completed runs so far
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


def count_finished(results_dir: Path, run_ids: Sequence[str]) -> int:
    done = 0
    for run_id in run_ids:
        try:
            summary = json.loads((Path(results_dir) / "runs" / run_id / "summary.json").read_text())
        except (OSError, ValueError):
            continue
        done += isinstance(summary, dict) and summary.get("status") in FINISHED
    return done


def judge_protocol(
    results_dir: Path,
    protocol: Protocol,
    overrides: Sequence[str] = (),
    waiting_for: str | None = None,
) -> ProtocolResult:
    """The protocol's claim verdicts once its grid has finished and nothing else
    (``waiting_for``) holds them back, else how far it is."""
    run_ids = grid_run_ids(protocol.experiment, overrides)
    finished = count_finished(results_dir, run_ids)
    loaded = load_runs(results_dir, protocol.experiment, overrides)
    ready = finished == len(run_ids) and waiting_for is None
    verdicts = judge_all(aggregate(uncontended(loaded.runs))) if ready else None
    return ProtocolResult(protocol, finished, len(run_ids), loaded, verdicts, waiting_for)


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


def matrix_markdown(results: Sequence[ProtocolResult]) -> str:
    """The matrix as a Markdown table whose verdicts link to their evidence lines."""
    table = matrix(results)
    header = ["#", *[r.protocol.title for r in results], "Across protocols"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        cells = [str(row["claim"])]
        for r in results:
            text = row[r.protocol.key]
            link = f"#{anchor(r.protocol, row['claim'])}" if r.complete else f"#{r.protocol.key}"
            cells.append(f"[{text}]({link})")
        cells.append(f"*{row['across']}*")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evidence_markdown(result: ProtocolResult) -> list[str]:
    """A protocol's section: its verdicts with the numbers behind them, each claim anchored."""
    lines = [f'<a id="{result.protocol.key}"></a>', "", f"### {result.protocol.title}", ""]
    if result.results is None:
        return [
            *lines,
            f"Pending: {result.finished} of {result.grid} runs of `experiment="
            f"{result.protocol.experiment}` have finished"
            + (f", and {result.waiting_for}" if result.waiting_for else "")
            + "; no verdicts until the grid is final and complete.",
            "",
        ]
    lines.append(
        f"From {len(result.loaded.runs)} completed run(s) of `experiment={result.protocol.experiment}`."
    )
    if result.loaded.contention is not None:
        lines.append(result.loaded.contention.note())
    lines.append("")
    for r in result.results:
        lines.append(f'- <a id="{anchor(result.protocol, r.claim.number)}"></a>'
                     f"**Claim {r.claim.number}**: {r.verdict}")  # fmt: skip
        lines += [f"  - {check.line}" for check in r.checks if check.line is not None]
    return [*lines, "", *[line for note in eager_footnote(lines) for line in (note, "")]]
