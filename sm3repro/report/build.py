"""Build REPORT.md, tables (CSV, LaTeX) and figures (PNG, PDF): the records are loaded once
(results.py), judged once (verdicts.py), and each section of SECTIONS renders its part; this
module is the only one that writes the report's files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sm3repro.io import atomic_write_text
from sm3repro.report.figures import save
from sm3repro.report.results import Results
from sm3repro.report.section import LatexTable, Section
from sm3repro.report.sections import claims, memory, protocol_arms, records, speed, study_tables
from sm3repro.report.sections import summary as summary_section
from sm3repro.report.verdicts import Judgement, judge_everything

# REPORT.md's sections in order: one screen of summary, then the details.
SECTIONS: tuple[Callable[[Judgement], Section | None], ...] = (
    summary_section.header,
    summary_section.summary,
    summary_section.reading_notes,
    claims.section,
    claims.under_each_protocol,
    speed.section,
    memory.section,
    study_tables.section,
    study_tables.curves,
    protocol_arms.lr_selection,
    protocol_arms.arms,
    records.excluded,
    records.provenance,
    records.notes,
)

# pdflatex has no glyphs for these without extra packages; < and > print as other characters.
LATEX_SYMBOLS = str.maketrans(
    {
        "±": r"$\pm$",
        "≤": r"$\le$",
        "≥": r"$\ge$",
        "≈": r"$\approx$",
        "–": "--",
        "<": "$<$",
        ">": "$>$",
        "†": r"$^\dagger$",
    }
)


def render_latex(name: str, table: LatexTable) -> str:
    tex = table.shown.to_latex(
        index=False, escape=True, caption=table.caption, label=f"tab:{name}",
        column_format=table.column_format,
    )  # fmt: skip
    return tex.translate(LATEX_SYMBOLS)


def _write(section: Section, out_dir: Path) -> None:
    for name, df in section.tables.items():
        atomic_write_text(out_dir / "tables" / f"{name}.csv", df.to_csv(index=False))
    for name, table in section.latex.items():
        atomic_write_text(out_dir / "tables" / f"{name}.tex", render_latex(name, table))
    for stem, figure in section.figures.items():
        save(figure.figure, out_dir / "figures" / stem, figure.formats)


def _log(sections: Sequence[Section], judgement: Judgement, out_dir: Path, tracker: Any) -> None:
    """Every table and PNG figure of the report, and its verdicts, to the tracker."""
    for section in sections:
        for name, df in section.tables.items():
            tracker.log_table(name, df)
        for stem, figure in section.figures.items():
            if "png" in figure.formats:
                tracker.log_image(stem, out_dir / "figures" / f"{stem}.png")
    verdicts = {f"claim{r.claim.number}": r.verdict for r in judgement.claims}
    tracker.log_summary({
        "runs_completed": len(judgement.reported.runs),
        "runs_excluded": len(judgement.reported.excluded),
        **verdicts,
    })  # fmt: skip


def build_report(
    results_dir: Path,
    out_dir: Path | None = None,
    tracker: Any = None,
    experiment: str | None = None,
    overrides: Sequence[str] = (),
) -> Path:
    """Write REPORT.md, tables/ and figures/ under ``out_dir`` (default ``results_dir``).

    ``experiment`` and ``overrides`` choose the runs (see results.Results.reported). ``tracker``,
    if given, receives the tables, figures and verdicts (log_table, log_image, log_summary); the
    caller owns it and calls finish().
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)

    judgement = judge_everything(Results(results_dir, overrides), experiment)
    sections = [part for make in SECTIONS if (part := make(judgement)) is not None]
    for section in sections:
        _write(section, out_dir)
    report = out_dir / "REPORT.md"
    markdown = "\n".join(line for section in sections for line in section.lines)
    atomic_write_text(report, markdown.rstrip("\n") + "\n")
    if tracker is not None:
        _log(sections, judgement, out_dir, tracker)
    return report
