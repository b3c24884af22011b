"""The report's sections, in REPORT.md's order (build.SECTIONS): each takes the one Judgement
(verdicts.py) and returns a Section (section.py) of Markdown, tables and figures, or None when it
has nothing to show. Nothing here writes a file."""
