"""The study's claims, each one record: its words, our rule in words, and the checks.

The rule text and the report's threshold legend are formatted from the same Threshold objects
the checks use, so a threshold is typed once. Add a claim by adding a record to CLAIMS.
"""

from __future__ import annotations

import pandas as pd

from sm3repro.report.judge import Check, Claim, ClaimResult, Threshold, judge
from sm3repro.report.published import BATCH_SIZES

# Relative differences of seed means.
CLEAR = Threshold(0.05, "clearly = >{:.0%}")  # "clearly higher/worse" (and spreads apart)
LEVEL = Threshold(0.05, "reaches the level = at most +{:.0%}")  # "reaches the level of"
SAME_SPEED = Threshold(0.10, "about as fast = within ±{:.0%}")  # runtimes
NOT_WORSE = Threshold(0.01, "as good as = at most {:.0%} worse")  # "as good as", "at least as"

CLAIMS: tuple[Claim, ...] = (
    Claim(
        1,
        "SM3's training loss is clearly higher after the first few epochs, then comparable to "
        "Adam's and Adagrad's; at batch 64 it reaches Adagrad's level and ends below Adam's.",
        f"Batch 64. Epoch-1 train loss of SM3-II above Adam's and Adagrad's by >{CLEAR.value:.0%} "
        f"(clearly higher early); final-epoch train loss at most {LEVEL.value:.0%} above "
        "Adagrad's (reaches its level) and below Adam's.",
        (
            *[
                Check("epoch-1 train loss", "train_loss_epoch1", 64, ">>", other, CLEAR)
                for other in ("adam", "adagrad")
            ],
            Check("final train loss", "train_loss", 64, "<~", "adagrad", LEVEL),
            Check("final train loss", "train_loss", 64, "<", "adam"),
        ),
    ),
    Claim(
        2,
        "At batch 512 SM3 converges more slowly and ends clearly worse than Adam and Adagrad.",
        f"Batch 512. Final-epoch train loss of SM3-II above Adam's and Adagrad's by "
        f">{CLEAR.value:.0%} (clearly worse), and its train loss averaged over all epochs above "
        "theirs (slower).",
        tuple(
            check
            for other in ("adam", "adagrad")
            for check in (
                Check("final train loss", "train_loss", 512, ">>", other, CLEAR),
                Check("train loss averaged over epochs", "train_loss_mean", 512, ">", other),
            )
        ),
    ),
    Claim(
        3,
        "SM3 trains faster than Adam and Adagrad (up to 25% less time) and about as fast as SGD.",
        "Batch 64 and 512, same machine. Runtime of SM3-II below Adam's and Adagrad's, and "
        f"within ±{SAME_SPEED.value:.0%} of SGD's. Judged by ratios, not absolute minutes.",
        tuple(
            check
            for bs in BATCH_SIZES
            for check in (
                Check("runtime min", "runtime_min", bs, "<", "adam"),
                Check("runtime min", "runtime_min", bs, "<", "adagrad"),
                Check("runtime min", "runtime_min", bs, "~", "sgd", SAME_SPEED),
            )
        ),
    ),
    Claim(
        4,
        "SM3 uses less CPU than Adam (28.68% less at batch 64) and than Adagrad.",
        "Batch 64 and 512, same machine. CPU-seconds per 1,000 training examples (process "
        "CPU time of the training loop / examples trained) of SM3-II below Adam's and "
        "Adagrad's. Not CPU%: with threads pinned to the cores every optimizer reads ~99%, so "
        "CPU% is the thread count, not the optimizer's cost.",
        tuple(
            Check("CPU-s per 1k examples", "cpu_s_per_1k", bs, "<", other)
            for bs in BATCH_SIZES
            for other in ("adam", "adagrad")
        ),
    ),
    Claim(
        5,
        "On test LAS/UAS SM3 is as good as or better than SGD and Adagrad, and below Adam.",
        "Batch 64 and 512. Test macro LAS and UAS (final model) of SM3-II at least SGD's and "
        f"Adagrad's minus {NOT_WORSE.value:.0%} (relative), and below Adam's.",
        tuple(
            check
            for bs in BATCH_SIZES
            for col, what in (
                ("test_las_macro", "test LAS macro"),
                ("test_uas_macro", "test UAS macro"),
            )
            for check in (
                Check(what, col, bs, ">~", "sgd", NOT_WORSE),
                Check(what, col, bs, ">~", "adagrad", NOT_WORSE),
                Check(what, col, bs, "<", "adam"),
            )
        ),
    ),
    Claim(
        6,
        "SM3 is memory efficient compared to Adam and Adagrad (claimed, never measured in the "
        "study).",
        "Batch 64 and 512. Optimizer state bytes and peak RSS of SM3-II below Adam's and "
        "Adagrad's.",
        tuple(
            Check(what, col, bs, "<", other)
            for bs in BATCH_SIZES
            for col, what in (
                ("optimizer_state_bytes", "optimizer state bytes"),
                ("peak_rss_mb", "peak RSS MB"),
            )
            for other in ("adam", "adagrad")
        ),
    ),
    Claim(
        7,
        "SM3-II's accumulators are at most SM3-I's (Proposition 2), so its steps are never "
        "smaller: SM3-II should train at least as well as SM3-I.",
        f"Batch 64 and 512. SM3-II vs SM3-I: final train loss at most {NOT_WORSE.value:.0%} "
        f"higher, final train accuracy and test macro LAS at most {NOT_WORSE.value:.0%} lower.",
        tuple(
            check
            for bs in BATCH_SIZES
            for check in (
                Check("final train loss", "train_loss", bs, "<~", "sm3_i", NOT_WORSE),
                Check("final train accuracy", "train_accuracy", bs, ">~", "sm3_i", NOT_WORSE),
                Check("test LAS macro", "test_las_macro", bs, ">~", "sm3_i", NOT_WORSE),
            )
        ),
    ),
)


def thresholds() -> str:
    """The thresholds the claims use, in first-use order, e.g. ``clearly = >5%; ...``."""
    used = dict.fromkeys(t for claim in CLAIMS for t in claim.thresholds)
    return "; ".join(t.describe() for t in used)


def judge_all(stats: pd.DataFrame) -> list[ClaimResult]:
    """Every claim judged on aggregate()'s seed means, with each check's outcome."""
    return [judge(claim, stats) for claim in CLAIMS]


def judge_claims(stats: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: statement, rule, verdict and the numbers behind it."""
    return pd.DataFrame(
        [
            dict(
                claim=r.claim.number,
                statement=r.claim.statement,
                rule=r.claim.rule,
                verdict=r.verdict,
                evidence=r.evidence,
            )
            for r in judge_all(stats)
        ]
    )
