"""Each claim's rule, one check at a time, through the claims' own entries (claims.CLAIMS).

The tests run over the checks the entries hold, so a claim added to CLAIMS is tested without a
second copy of its rule here: each of its checks must fail alone when its other optimizer's
number crosses the check's threshold, and hold just inside it. What ties an entry to its words
is checked against the rule text it carries: every optimizer, batch size and threshold a check
compares is named there. The numbers are our own, far from the study's, so every check passes
by a margin in BASE and a test flips exactly one.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

from sm3repro.optim import catalog
from sm3repro.report.claims import CLAIMS, claim_by_number, judge_all, judge_claims, thresholds
from sm3repro.report.eager import EAGER_MARK
from sm3repro.report.judge import (
    INTERVALS,
    MEMORY_ARM,
    SUBJECT,
    Check,
    CheckResult,
    Claim,
    ClaimResult,
    Op,
    Stat,
    Tier,
    compare,
    judge,
    run_check,
)

# Seed means per (optimizer, batch): every check of every claim passes with a wide margin. None
# of these are the study's numbers.
BASE: dict[tuple[str, int], dict[str, float]] = {}
_COLUMNS = (
    "train_loss_epoch1 train_loss train_loss_mean runtime_min cpu_s_per_1k test_las_macro "
    "test_uas_macro optimizer_state_bytes peak_rss_mb train_accuracy"
).split()
for _bs, _rows in {
    64: {
        "sm3_ii": (2.00, 0.400, 0.90, 20.0, 30.0, 0.800, 0.850, 1e4, 500.0, 0.900),
        "sm3_i": (2.10, 0.600, 0.95, 20.5, 29.0, 0.700, 0.760, 1e4, 500.0, 0.700),
        "sgd": (2.50, 0.900, 1.20, 20.2, 28.0, 0.600, 0.650, 0.0, 490.0, 0.600),
        "adagrad": (1.00, 0.500, 0.60, 40.0, 60.0, 0.650, 0.700, 4e6, 600.0, 0.850),
        "adam": (0.90, 0.700, 0.55, 45.0, 70.0, 0.900, 0.950, 8e6, 700.0, 0.800),
    },
    512: {
        "sm3_ii": (3.00, 1.000, 1.80, 5.0, 40.0, 0.780, 0.830, 1e4, 520.0, 0.850),
        "sm3_i": (3.10, 1.200, 1.90, 5.1, 39.0, 0.690, 0.740, 1e4, 520.0, 0.650),
        "sgd": (3.50, 1.500, 2.20, 5.2, 38.0, 0.590, 0.640, 0.0, 510.0, 0.500),
        "adagrad": (1.50, 0.500, 0.90, 9.0, 66.0, 0.640, 0.690, 4e6, 620.0, 0.880),
        "adam": (1.40, 0.400, 0.80, 10.0, 77.0, 0.880, 0.930, 8e6, 720.0, 0.890),
    },
}.items():
    for _opt, _vals in _rows.items():
        BASE[(_opt, _bs)] = dict(zip(_COLUMNS, _vals, strict=True))


def stats_frame(
    means: dict[tuple[str, int], dict[str, float]],
    std: dict[tuple[str, int, str], float] | None = None,
    n: int = 3,
) -> pd.DataFrame:
    """aggregate()'s layout: ``<col>_mean``, ``<col>_std`` and ``n`` per (optimizer, batch)."""
    rows = {}
    for (opt, bs), values in means.items():
        row: dict[str, float] = {"n": n}
        for col, mean in values.items():
            row[f"{col}_mean"] = mean
            row[f"{col}_std"] = (std or {}).get((opt, bs, col), 0.0)
        rows[(opt, bs)] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["optimizer", "batch_size"])
    return frame


def with_value(opt: str, bs: int, col: str, value: float) -> dict:
    means = {key: dict(values) for key, values in BASE.items()}
    means[(opt, bs)][col] = value
    return means


def failing_value(op: Op, subject: float, rel: float, margin: float = 0.02) -> float:
    """The other optimizer's value that makes ``subject <op> other`` fail by ``margin``."""
    if op is Op.BELOW:  # subject must be below: put the other below it
        return subject * (1 - margin)
    if op is Op.ABOVE:
        return subject * (1 + margin)
    if op is Op.ABOVE_BY_MORE_THAN:  # higher, but by less than rel
        return subject / (1 + rel - margin)
    if op is Op.AT_MOST_ABOVE_BY:  # subject more than rel above the other
        return subject / (1 + rel + margin)
    if op is Op.AT_MOST_BELOW_BY:  # subject more than rel below the other
        return subject / (1 - rel - margin)
    assert op is Op.WITHIN_EITHER_SIDE
    return subject / (1 + rel + margin)


def result(number: int, stats: pd.DataFrame) -> ClaimResult:
    return judge(next(c for c in CLAIMS if c.number == number), stats)


def key(r: CheckResult) -> tuple[int, str, str]:
    return r.check.batch, r.check.col, r.check.other


SINGLE_CHECKS = [
    pytest.param(claim, check, id=f"claim{claim.number}-b{check.batch}-{check.col}-"
                 f"{check.op.name}-{check.other}")
    for claim in CLAIMS
    for check in claim.checks
]  # fmt: skip


def test_every_claim_holds_on_base() -> None:
    for r in judge_all(stats_frame(BASE)):
        assert r.verdict == "holds", (r.claim.number, r.evidence)
        assert all(c.outcome is True for c in r.checks)


def test_each_check_compares_sm3_ii_with_what_its_rule_names() -> None:
    """The rule a claim carries names every optimizer and batch size its checks compare and
    every tolerance they apply; the checks read quantities BASE holds (else they could not be
    tested here), each check once."""
    for claim in CLAIMS:
        assert {c.subject for c in claim.checks} == {"sm3_ii"}
        assert catalog.label("sm3_ii") in claim.rule
        for check in claim.checks:
            assert catalog.label(check.other) in claim.rule, (claim.number, check)
            assert str(check.batch) in claim.rule.split(".")[0], (claim.number, check)
            assert check.col in BASE[("sm3_ii", check.batch)], (claim.number, check)
            if check.threshold is not None:
                assert f"{check.threshold.value:.0%}" in claim.rule, (claim.number, check)
        keys = [(c.batch, c.col, c.other) for c in claim.checks]
        assert len(keys) == len(set(keys)), claim.number


@pytest.mark.parametrize("claim, check", SINGLE_CHECKS)
def test_one_check_fails_alone(claim: Claim, check: Check) -> None:
    bs, col, other = check.batch, check.col, check.other
    subject = BASE[("sm3_ii", bs)][col]
    value = failing_value(check.op, subject, check.rel)
    r = judge(claim, stats_frame(with_value(other, bs, col, value)))
    failed = [key(c) for c in r.checks if c.outcome is not True]
    assert failed == [(bs, col, other)], r.evidence
    assert next(c for c in r.checks if key(c) == (bs, col, other)).outcome is False
    assert r.verdict == "does not hold"


@pytest.mark.parametrize("claim, check", SINGLE_CHECKS)
def test_threshold_edge(claim: Claim, check: Check) -> None:
    """The other's value just inside and just outside the check's tolerance (0 for strict)."""
    bs, col, other, rel = check.batch, check.col, check.other, check.rel
    subject = BASE[("sm3_ii", bs)][col]
    eps = 0.002
    inside, outside = {
        Op.BELOW: (subject * (1 + eps), subject * (1 - eps)),
        Op.ABOVE: (subject * (1 - eps), subject * (1 + eps)),
        Op.ABOVE_BY_MORE_THAN: (subject / (1 + rel + eps), subject / (1 + rel - eps)),
        Op.AT_MOST_ABOVE_BY: (subject / (1 + rel - eps), subject / (1 + rel + eps)),
        Op.AT_MOST_BELOW_BY: (subject / (1 - rel + eps), subject / (1 - rel - eps)),
        Op.WITHIN_EITHER_SIDE: (subject / (1 + rel - eps), subject / (1 + rel + eps)),
    }[check.op]
    for value, expected in ((inside, True), (outside, False)):
        r = judge(claim, stats_frame(with_value(other, bs, col, value)))
        outcomes = {key(c): c.outcome for c in r.checks}
        assert outcomes.pop((bs, col, other)) is expected, (value, r.evidence)
        assert all(o is True for o in outcomes.values())
        assert r.verdict == ("holds" if expected else "does not hold")


STRICT = [p for p in SINGLE_CHECKS if p.values[1].op in (Op.BELOW, Op.ABOVE)]


@pytest.mark.parametrize("claim, check", STRICT)
def test_overlapping_spreads_leave_a_strict_check_undecided(claim: Claim, check: Check) -> None:
    bs, col, other = check.batch, check.col, check.other
    subject = BASE[("sm3_ii", bs)][col]
    value = failing_value(check.op, subject, 0.0, margin=-0.02)  # passes on means, by 2%
    stats = stats_frame(with_value(other, bs, col, value), std={(other, bs, col): 0.05 * value})
    r = judge(claim, stats)
    outcomes = {key(c): c.outcome for c in r.checks}
    assert outcomes.pop((bs, col, other)) is None, r.evidence
    assert all(o is True for o in outcomes.values())
    assert r.verdict == "inconclusive"


def test_one_sided_tolerances_hold_by_any_margin_on_their_open_side() -> None:
    """``AT_MOST_BELOW_BY`` 1% is one-sided: 54.7% above holds (it is not "within 1%");
    ``WITHIN_EITHER_SIDE`` is the two-sided one. Likewise ``AT_MOST_ABOVE_BY`` below."""
    other = Stat(1.0, 0.0, 3)
    far_above, far_below = Stat(1.547, 0.0, 3), Stat(0.453, 0.0, 3)
    assert compare(Op.AT_MOST_BELOW_BY, far_above, other, 0.01) is True
    assert compare(Op.AT_MOST_BELOW_BY, far_below, other, 0.01) is False
    assert compare(Op.AT_MOST_ABOVE_BY, far_below, other, 0.01) is True
    assert compare(Op.AT_MOST_ABOVE_BY, far_above, other, 0.01) is False
    assert compare(Op.WITHIN_EITHER_SIDE, far_above, other, 0.01) is False
    assert compare(Op.WITHIN_EITHER_SIDE, far_below, other, 0.01) is False
    assert [op.tolerance for op in Op] == [False, False, False, True, True, True]
    assert {op.symbol(0.01) for op in Op} == {"<", ">", "> (by >1%)", "≤ (+1%)", "≥ (-1%)",
                                             "≈ (±1%)"}  # fmt: skip


def test_tolerance_outside_but_overlapping_is_undecided() -> None:
    """≈ SGD's runtime: 20% off, but the spreads overlap: neither holds nor fails."""
    subject = BASE[("sm3_ii", 64)]["runtime_min"]
    stats = stats_frame(
        with_value("sgd", 64, "runtime_min", subject / 1.2), std={("sgd", 64, "runtime_min"): 4.0}
    )
    r = result(3, stats)
    assert [key(c) for c in r.checks if c.outcome is None] == [(64, "runtime_min", "sgd")]
    assert r.verdict == "inconclusive"


def test_a_failure_outweighs_an_undecided_check() -> None:
    stats = stats_frame(
        {
            **with_value("adam", 64, "cpu_s_per_1k", 29.0),  # fails: SM3-II (30) above Adam
            ("adagrad", 64): {**BASE[("adagrad", 64)], "cpu_s_per_1k": 31.0},  # overlaps
        },
        std={("adagrad", 64, "cpu_s_per_1k"): 2.0},
    )
    r = result(4, stats)
    assert [c.outcome for c in r.checks[:2]] == [False, None]
    assert r.verdict == "does not hold"


def test_missing_data_names_what_is_missing() -> None:
    means = {k: v for k, v in BASE.items() if k != ("adagrad", 512)}
    means[("adam", 512)] = {k: v for k, v in BASE[("adam", 512)].items() if k != "cpu_s_per_1k"}
    r = result(4, stats_frame(means))
    assert r.missing == ["cpu_s_per_1k of adam@512", "adagrad@512"]
    assert r.verdict == "inconclusive (no data for cpu_s_per_1k of adam@512, adagrad@512)"
    assert [c.outcome for c in r.checks] == [True, True, None, None]
    assert "b512" not in r.evidence and "b64 CPU-s per 1k examples" in r.evidence


def test_one_seed_is_judged_on_means_and_says_so() -> None:
    stats = stats_frame(BASE, n=1)
    assert result(4, stats).verdict == "holds (n=1: no seed spread, judged on means)"
    two = stats_frame(BASE, n=2)
    assert result(4, two).verdict == "holds"


def test_a_result_without_checks_is_inconclusive_and_claims_no_single_seed() -> None:
    assert ClaimResult(CLAIMS[0], ()).verdict == "inconclusive"


def test_missing_std_counts_as_no_spread() -> None:
    stats = stats_frame(BASE)
    stats.loc[("adam", 64), "cpu_s_per_1k_std"] = math.nan  # one seed of Adam
    r = result(4, stats)
    assert r.checks[0].other == Stat(70.0, 0.0, 3)
    assert r.verdict == "holds"


def test_evidence_line_prints_both_sides_and_the_relative_difference() -> None:
    stats = stats_frame(BASE, std={("sm3_ii", 64, "cpu_s_per_1k"): 0.25})
    lines = result(4, stats).evidence.split("; ")
    assert lines[0] == (
        "b64 CPU-s per 1k examples: SM3-II 30.0000 ± 0.2500 < Adam 70.0000 ± 0.0000 (-57.1%): yes"
    )
    claim1 = result(1, stats_frame(BASE)).evidence.split("; ")
    assert claim1[0] == (
        "b64 epoch-1 train loss: SM3-II 2.0000 ± 0.0000 > (by >5%) Adam 0.9000 ± 0.0000 "
        "(+122.2%): yes"
    )
    assert claim1[2].startswith("b64 final train loss: SM3-II 0.4000 ± 0.0000 ≤ (+5%) Adagrad")
    claim3 = result(3, stats_frame(with_value("sgd", 64, "runtime_min", 30.0))).evidence
    assert "SM3-II 20.00 ± 0.00 ≈ (±10%) SGD 30.00 ± 0.00 (-33.3%): no" in claim3
    claim5 = result(5, stats_frame(BASE)).evidence
    assert "b64 test LAS macro: SM3-II 0.800 ± 0.000 ≥ (-1%) SGD 0.600 ± 0.000 (+33.3%): yes" in (
        claim5
    )


def test_judge_claims_table_and_threshold_legend() -> None:
    table = judge_claims(stats_frame(with_value("adam", 512, "peak_rss_mb", 400.0)))
    assert table["claim"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert table.set_index("claim")["verdict"].to_dict() == {
        **{n: "holds" for n in range(1, 8)},
        6: "does not hold",
    }
    assert list(table.columns) == ["claim", "statement", "rule", "verdict", "evidence"]
    assert (
        "b512 peak RSS MB: SM3-II 520.0 ± 0.0 < Adam 400.0 ± 0.0 (+30.0%): no"
        in (table.set_index("claim").loc[6, "evidence"])
    )
    assert thresholds() == (
        "clearly = >5%; reaches the level = at most +5%; about as fast = within ±10%; "
        "as good as = at most 1% worse"
    )
    rules = table.set_index("claim")["rule"]
    assert ">5%" in rules[1] and "+5%" not in rules[2] and "±10%" in rules[3]
    assert "1%" in rules[5] and "1%" in rules[7]


# -- compare(): every kind, on its own ------------------------------------------------------
@pytest.mark.parametrize(
    "kind, a, b, rel, expected",
    [
        ("<", (1.0, 0.0), (1.001, 0.0), 0, True),
        ("<", (1.001, 0.0), (1.0, 0.0), 0, False),
        ("<", (1.0, 0.0), (1.0, 0.0), 0, None),  # equal means: not strictly below
        ("<", (1.0, 0.5), (2.0, 0.5), 0, None),  # spreads touch: overlap
        ("<", (1.0, 0.49), (2.0, 0.5), 0, True),
        ("<", (2.0, 0.49), (1.0, 0.5), 0, False),
        (">", (2.0, 0.49), (1.0, 0.5), 0, True),
        (">", (1.0, 0.49), (2.0, 0.5), 0, False),
        (">", (2.0, 0.5), (1.0, 0.5), 0, None),
        (">", (-1.0, 0.0), (-2.0, 0.0), 0, True),  # relative to |b|: signs survive
        ("<", (-2.0, 0.0), (-1.0, 0.0), 0, True),
        (">>", (1.049, 0.0), (1.0, 0.0), 0.05, False),
        (">>", (1.051, 0.0), (1.0, 0.0), 0.05, True),
        (">>", (1.2, 0.1), (1.0, 0.1), 0.05, None),  # clearly apart on means, spreads touch
        (">>", (0.9, 0.0), (1.0, 0.0), 0.05, False),
        (">>", (1.0, 0.0), (0.0, 0.0), 0.05, True),  # from zero: infinitely higher
        ("<~", (1.049, 0.0), (1.0, 0.0), 0.05, True),
        ("<~", (1.051, 0.0), (1.0, 0.0), 0.05, False),
        ("<~", (0.5, 0.0), (1.0, 0.0), 0.05, True),
        ("<~", (1.2, 0.2), (1.0, 0.1), 0.05, None),
        ("<~", (1.0, 0.0), (0.0, 0.0), 0.05, False),
        (">~", (0.951, 0.0), (1.0, 0.0), 0.05, True),
        (">~", (0.949, 0.0), (1.0, 0.0), 0.05, False),
        (">~", (2.0, 0.0), (1.0, 0.0), 0.05, True),
        (">~", (0.95, 0.1), (1.0, 0.1), 0.01, None),
        ("~", (1.099, 0.0), (1.0, 0.0), 0.10, True),
        ("~", (0.901, 0.0), (1.0, 0.0), 0.10, True),
        ("~", (1.101, 0.0), (1.0, 0.0), 0.10, False),
        ("~", (0.899, 0.0), (1.0, 0.0), 0.10, False),
        ("~", (1.5, 0.3), (1.0, 0.2), 0.10, None),
        ("~", (0.0, 0.0), (0.0, 0.0), 0.10, True),  # both zero: no difference
        # exactly at the tolerance (binary fractions, no rounding): "by more than" excludes it,
        # "at most" / "at least" / "within" include it
        (">>", (1.5, 0.0), (1.0, 0.0), 0.5, False),
        ("<~", (1.5, 0.0), (1.0, 0.0), 0.5, True),
        (">~", (0.5, 0.0), (1.0, 0.0), 0.5, True),
        ("~", (1.5, 0.0), (1.0, 0.0), 0.5, True),
        ("~", (0.5, 0.0), (1.0, 0.0), 0.5, True),
    ],
)
def test_compare(kind: str, a: tuple, b: tuple, rel: float, expected: bool | None) -> None:
    assert compare(kind, Stat(*a, n=3), Stat(*b, n=3), rel) is expected


def test_overlap_is_symmetric() -> None:
    low, high = Stat(1.0, 0.3, 3), Stat(2.0, 0.3, 3)
    assert not low.overlaps(high) and not high.overlaps(low)
    wide = Stat(1.6, 0.2, 3)
    assert wide.overlaps(high) and high.overlaps(wide)
    assert wide.overlaps(low) is False and Stat(1.4, 0.1, 3).overlaps(low)


def test_rules_and_results_are_immutable() -> None:
    """Claims are shared constants: nothing may edit a rule or a judged outcome in place."""
    claim = CLAIMS[0]
    judged = judge(claim, stats_frame(BASE))
    for record, name in (
        (claim, "rule"),
        (claim.checks[0], "op"),
        (claim.checks[0].threshold, "value"),
        (claim_by_number(3).tiers[0], "name"),
        (judged, "checks"),
        (judged.checks[0], "outcome"),
        (judged.checks[0].subject, "mean"),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, name, None)


def test_compare_without_a_tolerance_uses_none() -> None:
    below, above = Stat(0.9, 0.0, 3), Stat(1.0, 0.0, 3)
    assert compare(">>", below, above) is False and compare(">>", above, below) is True
    assert compare("<~", above, below) is False and compare(">~", below, above) is False
    assert compare("~", Stat(1.0, 0.0, 3), Stat(1.0, 0.0, 3)) is True


def test_a_claim_is_found_by_its_number() -> None:
    for claim in CLAIMS:
        assert claim_by_number(claim.number) is claim


def test_tiers_are_picked_by_how_they_are_judged() -> None:
    claim = claim_by_number(3)
    by_intervals = claim.tiers_judged_by(INTERVALS)
    assert by_intervals and all(t.judged_by == INTERVALS for t in by_intervals)
    assert claim.tiers_judged_by(MEMORY_ARM) == ()
    memory = claim_by_number(6).tiers_judged_by(MEMORY_ARM)
    assert memory and all(t.judged_by == MEMORY_ARM for t in memory)


def test_a_tiered_claim_reads_sm3_ii_even_when_no_check_names_it() -> None:
    tier = Tier("fixed epochs", INTERVALS, figure="runtime_s")
    tiered = Claim(9, "s", "r", checks=(), tiers=(tier,), below=("adam",), about=("sgd",))
    assert tiered.optimizers == {SUBJECT, "adam", "sgd"}
    assert Claim(9, "s", "r", checks=(), below=("adam",)).optimizers == {"adam"}


def test_the_deciding_lines_are_the_failures_else_the_undecided_else_all() -> None:
    claim = claim_by_number(4)  # two or more checks on one quantity
    assert len(claim.checks) >= 3
    a, b = Stat(1.0, 0.1, 3), Stat(2.0, 0.1, 3)

    def judged(*outcomes: bool | None) -> ClaimResult:
        checks = claim.checks[: len(outcomes)]
        return ClaimResult(
            claim, tuple(CheckResult(c, a, b, o) for c, o in zip(checks, outcomes, strict=True))
        )

    mixed = judged(True, None, False)
    lines = [r.line for r in mixed.checks]
    assert mixed.deciding == [lines[2]]
    undecided = judged(True, None, None)
    assert undecided.deciding == [r.line for r in undecided.checks][1:]
    holds = judged(True, True)
    assert holds.deciding == [r.line for r in holds.checks]
    missing = ClaimResult(claim, (CheckResult(claim.checks[0], None, None, None, ("adam@64",)),))
    assert missing.deciding == []


def test_only_timings_of_cells_with_sm3s_eager_runs_are_marked() -> None:
    timing = next(c for c in claim_by_number(3).checks if c.quantity.timing)
    other = next(c for c in claim_by_number(5).checks if not c.quantity.timing)
    frame = stats_frame(BASE)
    assert not run_check(timing, frame).eager  # no sm3_eager column: nothing to mark
    frame["sm3_eager"] = 0
    assert not run_check(timing, frame).eager
    assert EAGER_MARK not in run_check(timing, frame).line
    frame.loc[(timing.subject, timing.batch), "sm3_eager"] = 1
    judged = run_check(timing, frame)
    assert judged.eager and judged.line.endswith(EAGER_MARK)
    frame.loc[(other.subject, other.batch), "sm3_eager"] = 1
    assert not run_check(other, frame).eager  # test scores are no timing
    assert not CheckResult(timing, Stat(1, 0, 3), Stat(2, 0, 3), True).eager  # unmarked by default


def test_a_check_without_a_threshold_compares_exactly() -> None:
    check = dataclasses.replace(CLAIMS[0].checks[0], op=Op.WITHIN_EITHER_SIDE, threshold=None)
    assert check.rel == 0.0 and check.op.symbol(check.rel) == "≈ (±0%)"
    same, other = Stat(1.0, 0.5, 3), Stat(1.01, 0.5, 3)
    assert compare(check.op, same, same, check.rel) is True
    assert compare(check.op, same, other, check.rel) is None  # off by 1%, spreads overlap
