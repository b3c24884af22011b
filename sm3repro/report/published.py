"""The study's published numbers and claims, as data (nothing here is computed).

Source: the study text (Sections III-IV, Tables I-II). Fig. 1 is curves only, so it is
represented by the claims' wording, not by numbers.
"""

from __future__ import annotations

import pandas as pd

from sm3repro import protocol

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

# The study's claims, numbered as in the report. Rules that test them live in report.py.
CLAIMS = {
    1: "SM3's training loss is clearly higher after the first few epochs, then comparable to "
    "Adam's and Adagrad's; at batch 64 it reaches Adagrad's level and ends below Adam's.",
    2: "At batch 512 SM3 converges more slowly and ends clearly worse than Adam and Adagrad.",
    3: "SM3 trains faster than Adam and Adagrad (up to 25% less time) and about as fast as SGD.",
    4: "SM3 uses less CPU than Adam (28.68% less at batch 64) and than Adagrad.",
    5: "On test LAS/UAS SM3 is as good as or better than SGD and Adagrad, and below Adam.",
    6: "SM3 is memory efficient compared to Adam and Adagrad (claimed, never measured in the "
    "study).",
    7: "SM3-II's accumulators are at most SM3-I's (Proposition 2), so its steps are never "
    "smaller: SM3-II should train at least as well as SM3-I.",
}

DATASET = "Penn Treebank WSJ (~40,000 training and ~2,500 test sentences)"
EPOCHS = 10
LEARNING_RATE = protocol.LR
