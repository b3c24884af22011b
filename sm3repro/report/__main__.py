"""``python -m sm3repro.report``"""

from sm3repro.report.report import main

main()
