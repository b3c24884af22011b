"""The report's opening: what it reproduces and from which runs, then one screen of summary (every
claim in the study's words with its verdict under each protocol and in each tier, and the numbers
that decide it), then how to read the numbers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sm3repro.arms.protocols import PROTOCOLS, Protocol
from sm3repro.optim import catalog
from sm3repro.report import published
from sm3repro.report.claims import CLAIMS, claims_text, timing_claims
from sm3repro.report.eager import EAGER_MARK, note_lines
from sm3repro.report.judge import SUBJECT, Claim
from sm3repro.report.protocols import ProtocolResult, anchor, robustness
from sm3repro.report.section import Section, values_text
from sm3repro.report.sections.speed import ANCHOR as SPEED_ANCHOR
from sm3repro.report.sections.speed import TIERED_TEXT
from sm3repro.report.speed_claims import FASTEST_EXACT
from sm3repro.report.verdicts import Judgement

MEMORY_ANCHOR = "memory-at-scale"
SHOWN_LINES = 2  # deciding evidence lines per claim in the summary


def machine_note() -> str:
    return (
        "Runtime and CPU% depend on the machine (CPU model, cores, threads, other load), so the "
        "absolute minutes and percentages are not comparable with the study's; "
        f"{claims_text(timing_claims())} are judged only by the order and ratios between "
        "optimizers measured on the same machine (e.g. SM3-II runtime / Adam runtime)."
    )


def header(j: Judgement) -> Section:
    """The title, what is reproduced, and from which runs (other experiments' counted)."""
    runs, summaries = j.reported.runs, j.reported.summaries
    experiment = j.reported.experiment or values_text(runs["experiment"])
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    others = j.reported.other_experiments
    counted = (
        f"; {sum(others.values())} record(s) of other experiments are not part of it ("
        + ", ".join(f"{label} {n}" for label, n in sorted(others.items(), key=lambda x: -x[1]))
        + ")"
        if others
        else ""
    )
    return Section([
        "# SM3 reproduction report",
        "",
        f"Reproduction of {published.CITATION}: a Chen & Manning feed-forward dependency parser "
        "trained with SM3 (both variants), SGD, Adagrad and Adam at batch sizes 64 and 512.",
        "",
        f"Generated {now} from {len(runs)} completed run(s) (experiment `{experiment}`; seeds "
        f"{values_text(sorted({s.seed for s in summaries}))}; epochs "
        f"{values_text(s.epochs_completed for s in summaries)}); {len(j.reported.excluded)} "
        f"run(s) excluded ([listed](#excluded-runs)){counted}. Our values are mean ± std over "
        "seeds (n seeds); the std is blank with one seed.",
        "",
    ])  # fmt: skip


def reading_notes(j: Judgement) -> Section:
    """What the data and the machine allow comparing, and which SM3 stands for the study's."""
    summaries = j.reported.summaries
    return Section([
        "## How to read the numbers",
        "",
        f"**Data.** Our runs use `{values_text(s.data.get('name') for s in summaries)}` (train "
        f"sentences: {values_text(s.data.get('train_sentences') for s in summaries)}). The study "
        f"used {published.DATASET}, while default runs here use UD English-EWT, so absolute "
        "LAS/UAS (and runtimes) are not expected to match; compare the optimizers' order. All "
        "scores are fractions in [0, 1].",
        "",
        f"**Machine.** {machine_note()}",
        "",
        f"SM3 in the study is our {catalog.label(SUBJECT)} (the variant every public "
        f"implementation has); {catalog.label('sm3_i')} is shown as an extra row.",
        "",
    ])  # fmt: skip


@dataclass(frozen=True)
class _Column:
    """A column of the summary matrix: a protocol (its seed-mean verdicts, if judged there, and
    its tiers), the reported experiment alone (a report of another experiment), or the memory
    arm."""

    header: str
    protocol: Protocol | None = None
    result: ProtocolResult | None = None
    memory: bool = False


def _columns(j: Judgement) -> list[_Column]:
    if not j.study_report:
        experiment = j.reported.experiment
        columns = [_Column(f"`{experiment}`" if experiment else "All runs")]
    else:
        by_key = {r.protocol.key: r for r in j.protocols}
        timed = set(j.speed.matrix.columns) if j.speed is not None else set()
        columns = [
            _Column(p.speed_label.capitalize(), p, by_key.get(p.key))
            for p in PROTOCOLS
            if p.key in by_key or p.speed_label in timed
        ]
    if j.memory is not None and j.memory.tiers:
        columns.append(_Column("Memory arm", memory=True))
    return columns


def _link(text: str, target: str, eager: bool = False) -> str:
    return f"[{text}{' ' + EAGER_MARK if eager else ''}](#{target})"


def _seed_mean_row(j: Judgement, claim: Claim, columns: list[_Column]) -> list[str]:
    cells = []
    for column in columns:
        if column.result is not None:
            r, n = column.result, claim.number
            target = anchor(r.protocol, n) if r.complete else r.protocol.key
            judged = r.result(n)
            cells.append(_link(r.cell(n), target, judged is not None and judged.eager))
        elif column.protocol is None and not column.memory:  # another experiment's report
            judged = next(c for c in j.claims if c.claim.number == claim.number)
            cells.append(_link(judged.verdict, "claims", judged.eager))
        else:
            cells.append("–")
    verdicts = [c.result.cell(claim.number) if c.result.complete else None
                for c in columns if c.result is not None]  # fmt: skip
    across = f"*{robustness(verdicts)}*" if len(verdicts) > 1 else "–"
    return [str(claim.number), claim.statement, "seed means", *cells, across]


def _speed_rows(j: Judgement, claim: Claim, columns: list[_Column]) -> list[list[str]]:
    if j.speed is None or j.speed.matrix.empty:
        return []
    rows = []
    eager = j.speed.eager_protocols
    for row in j.speed.matrix[j.speed.matrix["claim"] == claim.number].to_dict("records"):
        cells = []
        for column in columns:
            label = column.protocol.speed_label if column.protocol is not None else None
            if label not in row:
                cells.append("–")
                continue
            verdict = row[label]
            no_data = verdict == "no data"
            cells.append(verdict if no_data else _link(verdict, SPEED_ANCHOR, label in eager))
        exact = ", fastest exact" if row["implementation"] == FASTEST_EXACT else ""
        rows.append([str(claim.number), "", f"{row['tier']}{exact} (95% intervals)", *cells, "–"])
    return rows


def _memory_rows(j: Judgement, claim: Claim, columns: list[_Column]) -> list[list[str]]:
    rows = []
    for tier in (t for t in (j.memory.tiers if j.memory else []) if t.claim is claim):
        judged_by = f"memory arm, {tier.tier.name} ({tier.parameters / 1e6:.2f}M parameters)"
        cells = [_link(tier.verdict, MEMORY_ANCHOR) if c.memory else "–" for c in columns]
        rows.append([str(claim.number), "", judged_by, *cells, "–"])
    return rows


def _matrix(j: Judgement, columns: list[_Column]) -> list[str]:
    header = ["#", "Claim (study)", "Judged by", *(c.header for c in columns), "Across protocols"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    builders: list[Callable[[Judgement, Claim, list[_Column]], list[list[str]]]] = [
        lambda j, claim, columns: [_seed_mean_row(j, claim, columns)], _speed_rows, _memory_rows
    ]  # fmt: skip
    for claim in CLAIMS:
        for build in builders:
            lines += ["| " + " | ".join(row) + " |" for row in build(j, claim, columns)]
    return lines


def _deciding(j: Judgement) -> list[str]:
    lines = []
    for r in j.claims:
        shown = r.deciding[:SHOWN_LINES]
        more = len(r.deciding) - len(shown)
        numbers = "; ".join(shown) + (f" (and {more} more)" if more else "")
        lines.append(f"- **{r.claim.number}** {r.verdict}" + (f": {numbers}" if numbers else ""))
    return lines


def summary(j: Judgement) -> Section:
    """The claims x protocol matrix with each claim's words and tiers, and the deciding numbers."""
    columns = _columns(j)
    matrix = _matrix(j, columns)
    deciding = _deciding(j)
    experiment = j.reported.experiment or "every run"
    lines = [
        "## Summary",
        "",
        "Every claim of the study in its words, and its verdict under each protocol: on seed "
        "means by the claim's [rule](#claims), and where it is also judged in tiers, one row per "
        f"tier ([{TIERED_TEXT} in tiers](#{SPEED_ANCHOR}): ratios with 95% intervals; [memory at "
        f"scale](#{MEMORY_ANCHOR}): the memory arm's records). Each verdict links to the numbers "
        "behind it; – : not judged there.",
        "",
        *matrix,
        "",
        "*robust*: the same verdict under every protocol; *protocol-sensitive*: the verdict "
        "changes with the protocol; *undetermined*: a protocol's grid has not finished (no "
        "verdict is given for it).",
        "",
        f"What decides each verdict (`{experiment}`, seed means ± std; relative difference in "
        "brackets): the failed checks of a claim that does not hold, the undecided ones of an "
        "inconclusive claim, the checks of one that holds.",
        "",
        *deciding,
        "",
    ]
    return Section([*lines, *note_lines([*matrix, *deciding])])
