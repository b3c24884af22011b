"""``python -m sm3repro.arms.lr_selection``"""

from sm3repro.arms.lr_selection.cli import main

main()
