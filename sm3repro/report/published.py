"""The study's published numbers, as data (nothing here is computed).

Source: the study text (Sections III-IV, Tables I-II). Fig. 1 is curves only, so it is
represented by the claims' wording (claims.py, beside the rule that tests each), not by numbers.
"""

from __future__ import annotations

import pandas as pd

CITATION = (
    'J. Campos Salas, R. Das, Z. Hu, "SM3: Memory Efficient Adaptive Optimization" '
    "(replication of R. Anil, V. Gupta, T. Koren, Y. Singer, "
    '"Memory-Efficient Adaptive Optimization", 2019, arXiv:1901.11150)'
)

# The study's optimizer names -> ours. The study never says which SM3 variant it ran; SM3-II
# is the one every public implementation provides, so our sm3_ii stands in for its "SM3".
STUDY_NAME = {"sm3_ii": "SM3", "sgd": "SGD", "adagrad": "Adagrad", "adam": "Adam"}

# Table I: training for 10 epochs on PTB WSJ; CPU% and runtime in minutes (their machine).
TABLE1 = pd.DataFrame(
    [
        ("sm3_ii", 64, 38.3, 8.5),
        ("sgd", 64, 40.6, 9.1),
        ("adagrad", 64, 42.8, 10.3),
        ("adam", 64, 53.7, 13.1),
        ("sm3_ii", 512, 46.6, 2.8),
        ("sgd", 512, 46.8, 2.9),
        ("adagrad", 512, 54.1, 3.9),
        ("adam", 512, 58.1, 4.0),
    ],
    columns=["optimizer", "batch_size", "cpu_percent", "runtime_min"],
)

# Table II: test set, macro (sentence-averaged) LAS / UAS. The batch size is not stated.
TABLE2 = pd.DataFrame(
    [
        ("sm3_ii", 0.732, 0.783),
        ("sgd", 0.727, 0.778),
        ("adagrad", 0.713, 0.769),
        ("adam", 0.745, 0.794),
    ],
    columns=["optimizer", "test_las_macro", "test_uas_macro"],
)

DATASET = "Penn Treebank WSJ (~40,000 training and ~2,500 test sentences)"
