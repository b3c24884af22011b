"""The reproduction report: tables, figures and claim verdicts from the run records.

runs (which records, as a DataFrame) -> tables (seed means, Tables I-III) -> claims (verdicts)
-> figures and render (Markdown, LaTeX) -> build (writes them all) <- cli
(``python -m sm3repro.report``).
"""
