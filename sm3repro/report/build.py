"""Build REPORT.md, tables (CSV, LaTeX) and figures (PNG, PDF) from the run records.

Completed runs of one experiment are averaged over seeds per (optimizer, batch size), put
beside the study's numbers (published.py), and the study's claims are judged (claims.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sm3repro.io import atomic_write_text
from sm3repro.report import render
from sm3repro.report.claims import judge_claims
from sm3repro.report.figures import plot_curves
from sm3repro.report.memory_section import memory_section
from sm3repro.report.runs import load_runs
from sm3repro.report.speed_section import speed_section
from sm3repro.report.tables import aggregate, table1, table2, table3
from sm3repro.report.timing import uncontended

# figure file stem -> (metric column -> axis label, title)
FIGURES = {
    "fig1_train_loss": (
        {"train_loss": "training loss"},
        "Training loss per epoch (mean ± std over seeds)",
    ),
    "fig_dev_attachment": (
        {"dev_las_macro": "dev LAS (macro)", "dev_uas_macro": "dev UAS (macro)"},
        "Dev attachment scores per epoch (macro, mean ± std over seeds)",
    ),
}


def build_report(
    results_dir: Path,
    out_dir: Path | None = None,
    tracker: Any = None,
    experiment: str | None = None,
    overrides: Sequence[str] = (),
) -> Path:
    """Write REPORT.md, tables/ and figures/ under ``out_dir`` (default ``results_dir``).

    ``experiment`` and ``overrides`` choose the runs (see runs.load_runs). ``tracker``, if
    given, receives the tables, figures and verdicts (log_table, log_image, log_summary); the
    caller owns it and calls finish().
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)

    loaded = load_runs(results_dir, experiment, overrides)
    stats = aggregate(loaded.runs)
    tables = {
        "table1_cpu_runtime": table1(stats),
        "table2_las_uas": table2(stats),
        "table3_memory_speed": table3(stats),
        # timing verdicts over uncontended runs only (timing.py)
        "claims": judge_claims(aggregate(uncontended(loaded.runs))),
    }
    displays = render.displays(tables)
    for name, df in tables.items():
        atomic_write_text(out_dir / "tables" / f"{name}.csv", df.to_csv(index=False))
        shown, caption = displays[name]
        atomic_write_text(
            out_dir / "tables" / f"{name}.tex", render.render_latex(name, shown, caption)
        )
    atomic_write_text(out_dir / "tables" / "excluded_runs.csv", loaded.excluded.to_csv(index=False))

    for stem, (metrics, title) in FIGURES.items():
        plot_curves(loaded.curves, metrics, title, out_dir / "figures" / stem)
    figures = {stem: Path("figures") / f"{stem}.png" for stem in FIGURES}

    # The study protocol's report also judges the claims under the other protocols.
    # (Imported here: it imports lr_selection, which `python -m` must find unimported.)
    from sm3repro.report.protocol_sections import PROTOCOLS, build_sections

    sections = speed = None
    if loaded.experiment == PROTOCOLS[0].experiment:
        sections, _ = build_sections(results_dir, out_dir / "figures", overrides)
        speed = speed_section(results_dir, out_dir / "figures")  # claims 3 and 4 in tiers
        if speed is not None:
            sections.tables.update(speed.tables)
            sections.claims_top += speed.summary
        for name, df in sections.tables.items():
            atomic_write_text(out_dir / "tables" / f"{name}.csv", df.to_csv(index=False))

    report = out_dir / "REPORT.md"
    shown = {name: df for name, (df, _) in displays.items()}
    markdown = render.render_markdown(loaded, tables, shown, figures, sections)
    if speed is not None:
        markdown = markdown.rstrip("\n") + "\n\n" + speed.markdown
    if (results_dir / "memory").is_dir():  # the memory arm's records (make memory)
        markdown = (
            markdown.rstrip("\n")
            + "\n\n"
            + memory_section(results_dir / "memory", out_dir / "figures", out_dir)
        )
    atomic_write_text(report, markdown)

    if tracker is not None:
        for name, df in tables.items():
            tracker.log_table(name, df)
        tracker.log_table("excluded_runs", loaded.excluded)
        for name, rel in figures.items():
            tracker.log_image(name, out_dir / rel)
        verdicts = {
            f"claim{c}": v
            for c, v in tables["claims"][["claim", "verdict"]].itertuples(index=False)
        }
        tracker.log_summary(
            {"runs_completed": len(loaded.runs), "runs_excluded": len(loaded.excluded), **verdicts}
        )
    return report
