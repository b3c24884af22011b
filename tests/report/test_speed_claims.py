"""Claims 3 and 4 in tiers (report/speed_claims.py): which comparisons each tier makes, how a
tier's verdict follows from them, and where the old overlap rule and the interval rule part."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sm3repro.report import speed_claims as sc
from sm3repro.report import time_to_target as ttt
from sm3repro.report.intervals import Ratio


def runs_table(rows: list[tuple], protocol: str = "timed (tuned lr)") -> pd.DataFrame:
    """[(variant, batch, seed, runtime_s, ttt_s, optimizer_ms)]: every CPU figure equal to the
    matching time figure, so claim 4 follows claim 3."""
    out = []
    for variant, batch, seed, runtime, to_target, step_ms in rows:
        out.append({
            "protocol": protocol, "variant": variant, "batch_size": batch, "seed": seed,
            "run_id": f"{variant}-{batch}-{seed}", "runtime_s": runtime, "cpu_s": runtime,
            "cpu_s_per_1k": runtime, "ttt_s": to_target, "cpu_s_to_target": to_target,
            "optimizer_ms_per_step": step_ms, "optimizer_cpu_s_per_1k": step_ms,
            "optimizer_overhead": math.nan, "max_saving_from_optimizer": math.nan,
            "host_ms": math.nan,
        })  # fmt: skip
    return pd.DataFrame(out)


HOSTS = {0: 1.0, 1: 1.3, 2: 0.8}  # each seed block on a host of its own speed


def grid(sm3: float, adam: float, adagrad: float, sgd: float, ttt_sm3: float = 100.0,
         step_sm3: float = 0.3, sparse: float | None = None) -> list[tuple]:  # fmt: skip
    """Every optimizer at both batches and three seeds, times scaled by the block's host."""
    base = {"sm3_ii": (sm3, ttt_sm3, step_sm3), "adam": (adam, 50.0, 0.35),
            "adagrad": (adagrad, 40.0, 0.28), "sgd": (sgd, 60.0, 0.24)}  # fmt: skip
    if sparse is not None:
        base["sm3_ii" + ttt.SPARSE] = (sparse, ttt_sm3, step_sm3 / 2)
        base["sgd" + ttt.SPARSE] = (sgd * 0.8, 60.0, 0.12)
    jitter = {0: 1.0, 1: 1.01, 2: 0.99}
    return [(v, b, s, r * HOSTS[s] * jitter[s] ** (k + 1), t * HOSTS[s], m * HOSTS[s])
            for k, (v, (r, t, m)) in enumerate(base.items()) for b in (64, 512) for s in HOSTS]  # fmt: skip


def test_a_paired_timed_arm_decides_claim_3_in_every_tier() -> None:
    # fixed epochs: SM3-II 20% faster than Adam and Adagrad, as fast as SGD; slower to the
    # target; its step cheaper than Adam's and Adagrad's, within 10% of SGD's
    found = sc.comparisons(runs_table(grid(sm3=80, adam=100, adagrad=100, sgd=80, step_sm3=0.25)))
    matrix = sc.tier_matrix(found).set_index(["claim", "tier"])["timed (tuned lr)"]
    assert matrix[(3, "fixed epochs")] == "holds"
    assert matrix[(3, "time to target")] == "does not hold"  # 2x Adam's time, 2.5x Adagrad's
    assert matrix[(3, "optimizer step")] == "holds"  # 0.25 vs 0.35, 0.28; SGD's 0.24: +4%
    assert matrix[(4, "fixed epochs")] == "holds"
    assert matrix[(4, "time to target")] == "does not hold"
    # a step 25% above SGD's is decidedly not "about as fast"
    slow_step = sc.comparisons(
        runs_table(grid(sm3=80, adam=100, adagrad=100, sgd=80, step_sm3=0.3))
    )
    slow = sc.tier_matrix(slow_step).set_index(["claim", "tier"])["timed (tuned lr)"]
    assert slow[(3, "optimizer step")] == "does not hold"
    ev = sc.evidence(found)
    assert (ev["n"] == "3 vs 3 paired").all()  # paired by seed block: host speed cancels
    one = ev[(ev["claim"] == 3) & (ev["tier"] == "fixed epochs") & (ev["vs"] == "Adam")
             & (ev["batch_size"] == 64)]  # fmt: skip
    assert one["ratio [95% CI]"].iloc[0].startswith("0.80 [0.7")


def test_unpaired_noisy_runs_leave_claim_3_inconclusive_and_sparse_rows_get_their_own_rows():
    rows = grid(sm3=80, adam=100, adagrad=100, sgd=80, sparse=70)
    found = sc.comparisons(runs_table(rows, protocol="study"))  # study: unpaired (Welch)
    assert not any(c.ratio.paired for c in found)
    matrix = sc.tier_matrix(found)
    assert set(matrix["implementation"]) == {"dense", sc.FASTEST_EXACT}
    # the host factors (0.8-1.3) become spread when unpaired: no fixed-epoch decision
    dense = matrix.set_index(["claim", "tier", "implementation"])["study"]
    assert dense[(3, "fixed epochs", "dense")] == "inconclusive"
    exact = [c for c in found if c.implementation == sc.FASTEST_EXACT and c.other == "sgd"
             and c.tier == "fixed epochs"]  # fmt: skip
    # against SGD's sparse rows (0.8 x 80 = 64), not its dense runs (80)
    assert len(exact) == 2 and all(c.ratio.ratio == pytest.approx(70 / 64, rel=0.02) for c in exact)


def test_a_comparison_supports_the_claim_only_when_decided() -> None:
    def comparison(other: str, low: float, high: float, p: float = 1.0) -> sc.Comparison:
        ratio = Ratio(ratio=(low + high) / 2, low=low, high=high, n_a=3, n_b=3, misses_a=0,
                      misses_b=0, paired=True, equivalence_p=p)  # fmt: skip
        return sc.Comparison(3, "fixed epochs", "study", "dense", 64, other, other, ratio)

    assert comparison("adam", 0.7, 0.9).part is True
    assert comparison("adam", 1.1, 1.3).part is False
    assert comparison("adam", 0.9, 1.1).part is None
    assert comparison("sgd", 0.95, 1.05, p=0.01).part is True  # equivalent within ±10%
    assert comparison("sgd", 1.15, 1.30).part is False  # decidedly outside ±10%
    assert comparison("sgd", 1.05, 1.20).part is None  # slower, but not surely by > 10%
    assert sc.verdict([True, None]) == "inconclusive"
    assert sc.verdict([True, True]) == "holds" and sc.verdict([None, False]) == "does not hold"
    assert sc.verdict([]) == "no data"


def test_old_rule_disagreements_list_what_the_spreads_decided_and_the_interval_did_not() -> None:
    # two seeds each, spreads apart but too few runs for a tight interval
    rows = [("sm3_ii", 64, 0, 80.0, 1, 1), ("sm3_ii", 64, 1, 84.0, 1, 1),
            ("adam", 64, 0, 100.0, 1, 1), ("adam", 64, 1, 92.0, 1, 1)]  # fmt: skip
    runs = runs_table(rows, protocol="study")
    found = [c for c in sc.comparisons(runs) if c.tier == "fixed epochs"]
    listed = sc.old_rule_disagreements(runs, found)
    assert set(listed["old rule (spreads)"]) == {"yes"}
    assert set(listed["interval rule"]) == {"undecided"}
    assert sorted(listed["claim"]) == [3, 4]
    ratio = found[0].ratio
    assert ratio.low < 1 < ratio.high and ratio.ratio == pytest.approx(math.sqrt(80 * 84 / 9200))


def test_the_host_calibration_explains_the_runtime_spread_it_caused() -> None:
    rows = grid(sm3=80, adam=100, adagrad=100, sgd=80)
    runs = runs_table(rows)
    # the calibration saw each block's host speed (HOSTS), with 1% noise of its own
    noise = {0: 1.0, 1: 1.01, 2: 0.995}
    runs["host_ms"] = [10 * HOSTS[s] * noise[s] for s in runs["seed"]]
    effect = sc.calibration_effect(runs).iloc[0]
    assert effect["runs"] == len(runs) and effect["cells"] == 8  # 4 optimizers x 2 batches
    assert effect["within-cell std of runtime (%)"] > 15  # hosts 0.8-1.3
    assert effect["after normalising by the calibration (%)"] < 2
    assert effect["variance explained (%)"] > 98
    # a calibration blind to the host explains nothing
    runs["host_ms"] = 10.0
    assert sc.calibration_effect(runs).iloc[0]["variance explained (%)"] == 0
    runs["host_ms"] = math.nan  # records from before calibration: nothing to say
    assert sc.calibration_effect(runs).empty
