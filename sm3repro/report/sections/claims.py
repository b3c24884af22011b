"""The claims in detail: each claim's rule and verdict (claims.csv), the numbers behind every
verdict under each protocol, each claim anchored for the summary's links."""

from __future__ import annotations

import pandas as pd

from sm3repro.arms.protocols import STUDY
from sm3repro.report import claims
from sm3repro.report.eager import EAGER_NOTE, eager_footnote, note_lines
from sm3repro.report.judge import LEGEND, ClaimResult
from sm3repro.report.protocols import ProtocolResult, anchor, matrix
from sm3repro.report.section import LatexTable, Section, markdown_table
from sm3repro.report.sections.summary import machine_note
from sm3repro.report.verdicts import Judgement

# Claims table columns: table name -> header shown in Markdown and LaTeX.
CLAIM_COLUMNS = {
    "claim": "#",
    "statement": "Claim (study)",
    "rule": "Rule",
    "verdict": "Verdict",
    "evidence": "Numbers (ours)",
}


def claims_display(claims_table: pd.DataFrame) -> pd.DataFrame:
    return claims_table.rename(columns=CLAIM_COLUMNS)[list(CLAIM_COLUMNS.values())]


def _evidence(results: list[ClaimResult]) -> list[str]:
    """Each claim's verdict with its evidence lines (the numbers behind it)."""
    lines = []
    for r in results:
        lines.append(f"- **Claim {r.claim.number}**: {r.verdict}")
        lines += [f"  - {check.line}" for check in r.checks if check.line is not None]
    return lines


def _study_evidence_elsewhere(j: Judgement) -> bool:
    """Whether the study protocol's evidence (the same runs, the same verdicts) is shown under
    each protocol, so the claims section need not repeat it."""
    study = next((r for r in j.protocols if r.protocol is STUDY), None)
    return j.study_report and study is not None and study.complete


def section(j: Judgement) -> Section:
    """``## Claims``: the legend, the thresholds, the rules and verdicts, and (unless the study
    protocol's section shows them) the numbers behind each verdict."""
    table = claims.claims_table(j.claims)
    contention = [j.reported.contention.note(), ""] if j.reported.contention is not None else []
    caption = "The study's claims and our verdicts"
    if eager_footnote(table["evidence"].astype(str)):
        caption += f". {EAGER_NOTE}"
    lines = [
        "## Claims",
        "",
        LEGEND,
        "",
        f"Thresholds: {claims.thresholds()}. {machine_note()}",
        "",
        *contention,
        markdown_table(claims_display(table).drop(columns=CLAIM_COLUMNS["evidence"])),
        "",
    ]
    if not _study_evidence_elsewhere(j):
        evidence = _evidence(j.claims)
        lines += [
            "Numbers behind each verdict (ours, mean ± std over seeds; relative difference in "
            "brackets):",
            "",
            *evidence,
            "",
            *note_lines(evidence),
        ]
    latex = LatexTable(claims_display(table), caption, "rp{4cm}p{4cm}p{2.5cm}p{6cm}")
    return Section(lines, tables={"claims": table}, latex={"claims": latex})


def _protocol_evidence(result: ProtocolResult) -> list[str]:
    """A protocol's part: its verdicts with the numbers behind them, each claim anchored."""
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
        f"From {len(result.loaded.runs)} completed run(s) of "
        f"`experiment={result.protocol.experiment}`."
    )
    if result.loaded.contention is not None:
        lines.append(result.loaded.contention.note())
    lines.append("")
    for r in result.results:
        lines.append(f'- <a id="{anchor(result.protocol, r.claim.number)}"></a>'
                     f"**Claim {r.claim.number}**: {r.verdict}")  # fmt: skip
        lines += [f"  - {check.line}" for check in r.checks if check.line is not None]
    return [*lines, "", *note_lines(lines)]


def under_each_protocol(j: Judgement) -> Section | None:
    """``## Claims under each protocol``: the study report's per-protocol evidence."""
    if not j.protocols:
        return None
    lines = ["## Claims under each protocol", ""]
    for result in j.protocols:
        lines += _protocol_evidence(result)
    return Section(lines, tables={"protocol_matrix": matrix(j.protocols)})
