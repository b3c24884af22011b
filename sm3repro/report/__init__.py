"""The reproduction report: tables, figures and claim verdicts from the run records.

runs (which records, as a DataFrame) -> tables (seed means, Tables I-III) -> claims (verdicts)
-> figures and render (Markdown, LaTeX) -> build (writes them all) <- cli.
"""

from sm3repro.report.build import build_report
from sm3repro.report.cli import main

__all__ = ["build_report", "main"]
