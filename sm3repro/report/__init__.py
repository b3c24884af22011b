"""The reproduction report: REPORT.md, tables and figures from the run records.

results (every record read once, by one status rule; an experiment's runs as a table) ->
verdicts (every claim judged once: per protocol, in tiers, in the memory arm) -> sections (each
renders Markdown, tables and figures from the judgement) -> build (the only writer) <- cli
(``python -m sm3repro.report``). The claims (claims.py), the quantities they read
(quantities.py) and the protocols (sm3repro/arms/protocols.py) are data entries.
"""
