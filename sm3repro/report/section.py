"""What a section of the report is: its Markdown, and the tables and figures behind it, which
only the builder (build.py) writes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from matplotlib.figure import Figure


@dataclass
class FigureFile:
    figure: Figure
    formats: tuple[str, ...] = ("png", "pdf")  # figures/<stem>.<format>, each


@dataclass
class LatexTable:
    shown: pd.DataFrame  # the strings Markdown shows (tables.display)
    caption: str
    column_format: str | None = None  # LaTeX's, e.g. "rp{4cm}..."; None: pandas' default


@dataclass
class Section:
    """One part of REPORT.md: its lines (ending with a blank one), ``tables`` written as
    ``tables/<name>.csv``, ``latex`` as ``tables/<name>.tex``, and ``figures`` as
    ``figures/<stem>.<format>``."""

    lines: list[str]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    latex: dict[str, LatexTable] = field(default_factory=dict)
    figures: dict[str, FigureFile] = field(default_factory=dict)


def markdown_table(df: pd.DataFrame) -> str:
    # disable_numparse: tabulate would otherwise reformat the numbers (e.g. 9.0 -> 9)
    return df.to_markdown(index=False, disable_numparse=True)


def figure_link(alt: str, stem: str) -> str:
    """A Markdown image of ``figures/<stem>.png``, relative to REPORT.md."""
    return f"![{alt}](figures/{stem}.png)"


def values_text(values: Iterable[Any]) -> str:
    """The distinct values, in first-seen order, as the report prints a record field across runs
    (``not recorded`` when no run recorded it)."""
    seen = [
        str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    return ", ".join(dict.fromkeys(seen)) if seen else "not recorded"


def anchor_of(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")
