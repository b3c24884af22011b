"""The study's claims, each one entry: its words, our rule in words, the checks, and its tiers.

The rule text and the report's threshold legend are formatted from the same Threshold objects
the checks use, so a threshold is typed once; a check names its quantity (quantities.py), so its
decimals and timing flag come with it. Add a claim by adding an entry to CLAIMS: the report
judges it under every protocol, and its summary shows it with its words.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from sm3repro.report.judge import (
    INTERVALS,
    MEMORY_ARM,
    Check,
    Claim,
    ClaimResult,
    Op,
    Threshold,
    Tier,
    judge,
)
from sm3repro.report.quantities import QUANTITY as Q
from sm3repro.study import BATCH_SIZES

# Relative differences of seed means.
CLEAR = Threshold(0.05, "clearly = >{:.0%}")  # "clearly higher/worse" (and spreads apart)
LEVEL = Threshold(0.05, "reaches the level = at most +{:.0%}")  # "reaches the level of"
SAME_SPEED = Threshold(0.10, "about as fast = within ±{:.0%}")  # runtimes
NOT_WORSE = Threshold(0.01, "as good as = at most {:.0%} worse")  # "as good as", "at least as"

# Claims 3 and 4 in tiers: each a per-run figure of speed_claims.run_table (lower is better).
SPEED_TIERS = (
    Tier("fixed epochs", INTERVALS, figure="runtime_s"),
    Tier("time to target", INTERVALS, figure="ttt_s"),
    Tier("optimizer step", INTERVALS, figure="optimizer_ms_per_step"),
)
CPU_TIERS = (
    Tier("fixed epochs", INTERVALS, figure="cpu_s_per_1k"),
    Tier("time to target", INTERVALS, figure="cpu_s_to_target"),
    Tier("optimizer step", INTERVALS, figure="optimizer_cpu_s_per_1k"),
)
# Claim 6 in the memory arm (memory.py): at the study's size and at its largest width.
MEMORY_TIERS = (
    Tier("at the study's scale", MEMORY_ARM, width="smallest"),
    Tier("at scale", MEMORY_ARM, width="largest"),
)

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
                Check(Q["train_loss_epoch1"], 64, Op.ABOVE_BY_MORE_THAN, other, CLEAR)
                for other in ("adam", "adagrad")
            ],
            Check(Q["train_loss"], 64, Op.AT_MOST_ABOVE_BY, "adagrad", LEVEL),
            Check(Q["train_loss"], 64, Op.BELOW, "adam"),
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
                Check(Q["train_loss"], 512, Op.ABOVE_BY_MORE_THAN, other, CLEAR),
                Check(Q["train_loss_mean"], 512, Op.ABOVE, other),
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
                Check(Q["runtime_min"], bs, Op.BELOW, "adam"),
                Check(Q["runtime_min"], bs, Op.BELOW, "adagrad"),
                Check(Q["runtime_min"], bs, Op.WITHIN_EITHER_SIDE, "sgd", SAME_SPEED),
            )
        ),
        tiers=SPEED_TIERS,
        below=("adam", "adagrad"),
        about=("sgd",),
    ),
    Claim(
        4,
        "SM3 uses less CPU than Adam (28.68% less at batch 64) and than Adagrad.",
        "Batch 64 and 512, same machine. CPU-seconds per 1,000 training examples (process "
        "CPU time of the training loop / examples trained) of SM3-II below Adam's and "
        "Adagrad's. Not CPU%: with threads pinned to the cores every optimizer reads ~99%, so "
        "CPU% is the thread count, not the optimizer's cost.",
        tuple(
            Check(Q["cpu_s_per_1k"], bs, Op.BELOW, other)
            for bs in BATCH_SIZES
            for other in ("adam", "adagrad")
        ),
        tiers=CPU_TIERS,
        below=("adam", "adagrad"),
    ),
    Claim(
        5,
        "On test LAS/UAS SM3 is as good as or better than SGD and Adagrad, and below Adam.",
        "Batch 64 and 512. Test macro LAS and UAS (final model) of SM3-II at least SGD's and "
        f"Adagrad's minus {NOT_WORSE.value:.0%} (relative), and below Adam's.",
        tuple(
            check
            for bs in BATCH_SIZES
            for score in (Q["test_las_macro"], Q["test_uas_macro"])
            for check in (
                Check(score, bs, Op.AT_MOST_BELOW_BY, "sgd", NOT_WORSE),
                Check(score, bs, Op.AT_MOST_BELOW_BY, "adagrad", NOT_WORSE),
                Check(score, bs, Op.BELOW, "adam"),
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
            Check(memory, bs, Op.BELOW, other)
            for bs in BATCH_SIZES
            for memory in (Q["optimizer_state_bytes"], Q["peak_rss_mb"])
            for other in ("adam", "adagrad")
        ),
        tiers=MEMORY_TIERS,
        below=("adam", "adagrad"),
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
                Check(Q["train_loss"], bs, Op.AT_MOST_ABOVE_BY, "sm3_i", NOT_WORSE),
                Check(Q["train_accuracy"], bs, Op.AT_MOST_BELOW_BY, "sm3_i", NOT_WORSE),
                Check(Q["test_las_macro"], bs, Op.AT_MOST_BELOW_BY, "sm3_i", NOT_WORSE),
            )
        ),
    ),
)


def thresholds() -> str:
    """The thresholds the claims use, in first-use order, e.g. ``clearly = >5%; ...``."""
    used = dict.fromkeys(t for claim in CLAIMS for t in claim.thresholds)
    return "; ".join(t.describe() for t in used)


def claim_by_number(number: int) -> Claim:
    return next(c for c in CLAIMS if c.number == number)


def named_optimizers() -> frozenset[str]:
    """Every optimizer a claim reads: a protocol's verdicts wait for these runs only, so an
    optimizer outside the study (an extra row of the tables) never holds them back."""
    return frozenset(name for c in CLAIMS for name in c.optimizers)


def claims_reading(quantity: str) -> list[int]:
    """The numbers of the claims with a check on ``quantity``."""
    return [c.number for c in CLAIMS if any(check.col == quantity for check in c.checks)]


def timing_claims() -> list[int]:
    """The numbers of the claims with a check on a timing (what contention leaves out)."""
    return [c.number for c in CLAIMS if any(check.quantity.timing for check in c.checks)]


def claims_text(numbers: Sequence[int]) -> str:
    """``claim 4``, ``claims 3 and 4``, ``claims 1, 2 and 5``."""
    if not numbers:
        return "no claim"
    if len(numbers) == 1:
        return f"claim {numbers[0]}"
    return f"claims {', '.join(str(n) for n in numbers[:-1])} and {numbers[-1]}"


def judge_all(stats: pd.DataFrame) -> list[ClaimResult]:
    """Every claim judged on aggregate()'s seed means, with each check's outcome."""
    return [judge(claim, stats) for claim in CLAIMS]


def claims_table(results: Sequence[ClaimResult]) -> pd.DataFrame:
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
            for r in results
        ]
    )


def judge_claims(stats: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: statement, rule, verdict and the numbers behind it."""
    return claims_table(judge_all(stats))
