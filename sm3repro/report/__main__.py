"""``python -m sm3repro.report``"""

from sm3repro.report.cli import main

main()
