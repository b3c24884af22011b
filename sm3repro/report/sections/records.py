"""Where the numbers come from: the records left out (other experiments' are counted in the
header, not listed), the machine, software and data the runs recorded, and the loader's notes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sm3repro.record.schema import RunSummary
from sm3repro.report.section import Section, markdown_table, values_text
from sm3repro.report.verdicts import Judgement


def excluded(j: Judgement) -> Section:
    """``## Excluded runs``: records of the experiment that are not in its tables, and why."""
    table = j.reported.excluded
    return Section(
        ["## Excluded runs", "", markdown_table(table) if len(table) else "None.", ""],
        tables={"excluded_runs": table},
    )


def _resources(summaries: list[RunSummary], field: str) -> Iterable[Any]:
    return (getattr(s.resources, field) for s in summaries if s.resources is not None)


def _nested(summaries: list[RunSummary], section: str, key: str) -> dict[str, str]:
    """name -> its values across runs, for a dict inside a record section (e.g. the packages)."""
    names = sorted({n for s in summaries for n in (getattr(s, section).get(key) or {})})
    return {
        n: values_text((getattr(s, section).get(key) or {}).get(n) for s in summaries)
        for n in names
    }


def provenance(j: Judgement) -> Section:
    """``## Machine, software and data``: what the reported runs recorded about where they ran."""
    summaries = j.reported.summaries
    prov = lambda key: values_text(s.provenance.get(key) for s in summaries)  # noqa: E731
    lines = [
        f"- CPU model: {prov('cpu_model')}",
        f"- CPU count: {prov('cpu_count')}; usable cores: "
        f"{values_text(_resources(summaries, 'usable_cores'))}; torch threads: "
        f"{values_text(_resources(summaries, 'torch_threads'))}",
        f"- Platform: {prov('platform')}; Python: {prov('python')}",
        f"- Git commit: {prov('git_commit')} (dirty: {prov('git_dirty')})",
    ]
    packages = _nested(summaries, "provenance", "packages")
    if packages:
        lines.append("- Packages: " + "; ".join(f"{n} {v}" for n, v in packages.items()))
    checksums = _nested(summaries, "data", "checksums")
    lines += ["", "Data checksums (sha256):", ""] + [f"- {n}: `{v}`" for n, v in checksums.items()]
    commands = sorted({str(s.provenance["command"]) for s in summaries
                       if s.provenance.get("command") is not None})  # fmt: skip
    lines += ["", "Commands (from provenance):", "", "```", *commands, "```"] if commands else []
    return Section(["## Machine, software and data", "", *lines, ""])


def notes(j: Judgement) -> Section | None:
    """``## Notes``: what the loader noticed (missing grid runs, unreadable metrics, ...)."""
    if not j.reported.notes:
        return None
    return Section(["## Notes", "", *[f"- {note}" for note in j.reported.notes], ""])
