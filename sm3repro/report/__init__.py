"""The reproduction report: tables, figures and claim verdicts from the run records."""

from sm3repro.report.report import build_report, main

__all__ = ["build_report", "main"]
