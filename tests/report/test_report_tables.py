"""Tables I-III: seed statistics, ours-minus-study differences and ratios, computed here again.

The runs are our own numbers, far from the study's, so a difference with its sign flipped, a
ratio upside down or against the wrong row gives another number than the one computed here.
"""

from __future__ import annotations

import statistics

import pandas as pd
import pytest

from sm3repro.record.implementation import sm3_ran_eager
from sm3repro.report import published
from sm3repro.report.eager import EAGER_MARK
from sm3repro.report.quantities import VALUES
from sm3repro.report.tables import (
    TABLE1_COLUMNS,
    TABLE1_EAGER,
    TABLE3_COLUMNS,
    TABLE3_EAGER,
    aggregate,
    display,
    has_eager,
    mark_eager,
    table1,
    table2,
    table3,
)

# (optimizer, batch) -> per seed: (cpu%, runtime min, test LAS macro, test UAS macro, state bytes)
SEEDS = {
    ("sm3_ii", 64): [(61.0, 4.0, 0.612, 0.701, 5_000), (62.0, 5.0, 0.618, 0.705, 5_000)],
    ("sgd", 64): [(70.0, 3.0, 0.500, 0.600, 0), (72.0, 3.5, 0.510, 0.620, 0)],
    ("adagrad", 64): [(40.0, 6.0, 0.790, 0.820, 400_000), (41.0, 6.4, 0.800, 0.830, 400_000)],
    ("adam", 64): [(30.0, 9.0, 0.850, 0.880, 800_000), (31.0, 9.0, 0.870, 0.900, 800_000)],
    ("sm3_ii", 512): [(20.0, 1.0, 0.400, 0.450, 5_000), (20.0, 1.2, 0.420, 0.460, 5_000)],
    ("adam", 512): [(25.0, 2.0, 0.900, 0.950, 800_000), (27.0, 2.4, 0.880, 0.930, 800_000)],
    ("sm3_i", 512): [(21.0, 1.1, 0.300, 0.350, 6_000), (21.0, 1.3, 0.320, 0.360, 6_000)],
}


def runs_frame() -> pd.DataFrame:
    rows = []
    for (opt, bs), seeds in SEEDS.items():
        for seed, (cpu, runtime, las, uas, state) in enumerate(seeds):
            row = dict.fromkeys(VALUES, 1.0)
            row.update(
                optimizer=opt, batch_size=bs, seed=seed, optimizer_impl=f"impl-{opt}",
                cpu_percent=cpu, runtime_min=runtime, test_las_macro=las, test_uas_macro=uas,
                test_las_micro=las + 0.01, test_uas_micro=uas + 0.01,
                optimizer_state_bytes=state, peak_rss_mb=500.0 + state / 1e4 + seed,
            )  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def stats() -> pd.DataFrame:
    return aggregate(runs_frame())


def ours(opt: str, bs: int, i: int) -> tuple[float, float]:
    """Seed mean and sample std of the i-th quantity of SEEDS, computed by hand."""
    values = [seed[i] for seed in SEEDS[(opt, bs)]]
    return statistics.mean(values), statistics.stdev(values)


def row(table: pd.DataFrame, opt: str, bs: int) -> pd.Series:
    match = table[(table["optimizer"] == opt) & (table["batch_size"] == bs)]
    assert len(match) == 1, (opt, bs)
    return match.iloc[0]


def test_aggregate_is_mean_std_and_count_per_optimizer_and_batch(stats: pd.DataFrame) -> None:
    for (opt, bs), seeds in SEEDS.items():
        got = stats.loc[(opt, bs)]
        mean, std = ours(opt, bs, 0)
        assert got["n"] == len(seeds)
        assert got["cpu_percent_mean"] == pytest.approx(mean)
        assert got["cpu_percent_std"] == pytest.approx(std)
        assert got["optimizer_impl"] == f"impl-{opt}"
    one_seed = aggregate(runs_frame().drop_duplicates(["optimizer", "batch_size"]))
    assert one_seed["n"].eq(1).all() and one_seed["cpu_percent_std"].isna().all()


def test_table1_differences_and_ratios(stats: pd.DataFrame) -> None:
    t1 = table1(stats)
    study = published.TABLE1.set_index(["optimizer", "batch_size"])
    for opt, bs in [("sm3_ii", 64), ("sgd", 64), ("adagrad", 64), ("adam", 64), ("sm3_ii", 512)]:
        r = row(t1, opt, bs)
        cpu, cpu_std = ours(opt, bs, 0)
        runtime, _ = ours(opt, bs, 1)
        cpu_study, runtime_study = study.loc[(opt, bs)]
        assert r["cpu_percent_mean"] == round(cpu, 1)
        assert r["cpu_percent_std"] == round(cpu_std, 1)
        assert r["cpu_percent_study"] == cpu_study and r["runtime_min_study"] == runtime_study
        assert r["cpu_percent_diff"] == pytest.approx(round(cpu, 1) - cpu_study, abs=1e-9)
        assert r["runtime_min_diff"] == pytest.approx(round(runtime, 2) - runtime_study, abs=1e-9)
        adam_cpu, adam_runtime = ours("adam", bs, 0)[0], ours("adam", bs, 1)[0]
        assert r["runtime_vs_adam"] == round(round(runtime, 2) / round(adam_runtime, 2), 3)
        assert r["cpu_vs_adam"] == round(round(cpu, 1) / round(adam_cpu, 1), 3)
        adam_study = study.loc[("adam", bs)]
        assert r["runtime_vs_adam_study"] == round(runtime_study / adam_study["runtime_min"], 3)
        assert r["cpu_vs_adam_study"] == round(cpu_study / adam_study["cpu_percent"], 3)
    # signs: our SM3-II at batch 64 used more CPU than the study's (61.5 vs 38.3), less time
    sm3 = row(t1, "sm3_ii", 64)
    assert sm3["cpu_percent_diff"] == pytest.approx(23.2) and sm3["runtime_min_diff"] == -4.0
    assert sm3["runtime_vs_adam"] == 0.5 and sm3["runtime_vs_adam_study"] == 0.649


def test_table1_rows_are_ours_plus_the_studys(stats: pd.DataFrame) -> None:
    t1 = table1(stats)
    # the study's rows without runs of ours stay (n = 0); SM3-I, not in the study, is kept
    # where it ran; rows run by batch, then optimizer in display order
    assert list(zip(t1["optimizer"], t1["batch_size"], t1["n"], strict=True)) == [
        ("sm3_ii", 64, 2), ("sgd", 64, 2), ("adagrad", 64, 2), ("adam", 64, 2),
        ("sm3_ii", 512, 2), ("sm3_i", 512, 2), ("sgd", 512, 0), ("adagrad", 512, 0),
        ("adam", 512, 2),
    ]  # fmt: skip
    assert t1["study"].tolist()[:4] == ["SM3", "SGD", "Adagrad", "Adam"]
    missing = row(t1, "sgd", 512)
    assert pd.isna(missing["cpu_percent_mean"]) and missing["cpu_percent_study"] == 46.8
    assert pd.isna(row(t1, "sm3_i", 512)["cpu_percent_study"])


def test_table2_differences(stats: pd.DataFrame) -> None:
    t2 = table2(stats)
    study = published.TABLE2.set_index("optimizer")
    for (opt, bs), _ in SEEDS.items():
        r = row(t2, opt, bs)
        for i, col in ((2, "test_las_macro"), (3, "test_uas_macro")):
            mean, std = ours(opt, bs, i)
            assert r[f"{col}_mean"] == round(mean, 3) and r[f"{col}_std"] == round(std, 3)
            if opt in study.index:
                expected = round(round(mean, 3) - study.loc[opt, col], 3)
                assert r[f"{col}_diff"] == pytest.approx(expected, abs=1e-9), (opt, bs, col)
            else:
                assert pd.isna(r[f"{col}_diff"])
        assert r["test_las_micro_mean"] == pytest.approx(round(ours(opt, bs, 2)[0] + 0.01, 3))
    # rows: what ran, plus the study's optimizers at every batch (its Table II has no batch)
    assert list(zip(t2["optimizer"], t2["batch_size"], t2["n"], strict=True)) == [
        ("sm3_ii", 64, 2), ("sgd", 64, 2), ("adagrad", 64, 2), ("adam", 64, 2),
        ("sm3_ii", 512, 2), ("sm3_i", 512, 2), ("sgd", 512, 0), ("adagrad", 512, 0),
        ("adam", 512, 2),
    ]  # fmt: skip
    assert row(t2, "sm3_ii", 512)["test_las_macro_diff"] == pytest.approx(0.41 - 0.732)
    assert row(t2, "adam", 64)["test_uas_macro_diff"] == pytest.approx(0.89 - 0.794)


def test_table3_state_share_of_adams(stats: pd.DataFrame) -> None:
    t3 = table3(stats)
    assert set(zip(t3["optimizer"], t3["batch_size"], strict=True)) == set(SEEDS)  # ran only
    for opt, bs in SEEDS:
        state = ours(opt, bs, 4)[0]
        expected = round(100 * state / ours("adam", bs, 4)[0], 2)
        assert row(t3, opt, bs)["state_pct_of_adam"] == expected
    assert row(t3, "sm3_i", 512)["state_pct_of_adam"] == 0.75
    r = row(t3, "sm3_ii", 64)
    assert (
        r["optimizer_state_bytes_mean"] == 5_000 and str(r["optimizer_state_bytes_mean"]) == "5000"
    )
    assert r["peak_rss_mb_mean"] == 501.0 and r["peak_rss_mb_std"] == round(2**-0.5, 1)


def test_columns_read_left_to_right_as_the_csv_shows_them(stats: pd.DataFrame) -> None:
    """Each difference and share sits right after the numbers it is taken from."""
    quantity = ["{}_mean", "{}_std", "{}_study", "{}_diff"]
    ratios = ["runtime_vs_adam", "runtime_vs_adam_study", "cpu_vs_adam", "cpu_vs_adam_study"]
    assert list(table1(stats).columns) == [
        "optimizer", "study", "batch_size", "n",
        *[c.format("cpu_percent") for c in quantity], "cpu_s_per_1k_mean", "cpu_s_per_1k_std",
        *[c.format("runtime_min") for c in quantity], *ratios, "cpu_s_per_1k_vs_adam",
        "sm3_eager",
    ]  # fmt: skip
    assert list(table2(stats).columns) == [
        "optimizer", "study", "batch_size", "n",
        *[c.format(q) for q in ("test_las_macro", "test_uas_macro") for c in quantity],
        *[c.format(q) for q in ("test_las_micro", "test_uas_micro") for c in quantity[:2]],
    ]  # fmt: skip
    assert list(table3(stats).columns)[3:7] == [
        "n_parameters_mean", "optimizer_state_bytes_mean", "state_pct_of_adam", "peak_rss_mb_mean",
    ]  # fmt: skip


def test_a_row_with_one_seed_is_shown() -> None:
    """One seed of an optimizer the study never ran still gets its row, in every table."""
    runs = runs_frame()
    one = aggregate(runs[(runs["optimizer"] != "sm3_i") | (runs["seed"] == 0)])
    for table in (table1, table2, table3):
        r = row(table(one), "sm3_i", 512)
        assert r["n"] == 1, table.__name__
    assert row(table1(one), "sm3_i", 512)["cpu_percent_mean"] == 21.0
    assert pd.isna(row(table1(one), "sm3_i", 512)["cpu_percent_std"])


def test_rounding_takes_the_longest_matching_prefix_and_leaves_the_rest() -> None:
    """A column is rounded by the longest quantity name it starts with; columns that match none,
    or hold no floats, pass through as they are."""
    from sm3repro.report.tables import _round

    df = pd.DataFrame({
        "cpu_mean": [1.23456], "cpu_s_mean": [1.23456], "cpu_note": ["fused"],
        "other": [9.87654], "cpu_count": [3],
    })  # fmt: skip
    rounded = _round(df, {"cpu": 0, "cpu_s": 3})
    assert rounded["cpu_s_mean"].tolist() == [1.235] and rounded["cpu_mean"].tolist() == [1]
    assert str(rounded["cpu_mean"].dtype) == "Int64"  # 0 decimals: no trailing ".0"
    assert rounded["cpu_note"].tolist() == ["fused"] and rounded["other"].tolist() == [9.87654]
    assert rounded["cpu_count"].dtype == "int64"


EAGER_IMPL = "sm3repro.SM3(variant=ii, cover=dims, kernel=eager)"


@pytest.mark.parametrize(
    ("impl", "eager"),
    [
        ("sm3repro.SM3(variant=ii, cover=dims, kernel=eager)", True),
        ("sm3repro.SM3(variant=ii, cover=dims)", True),  # before the fused kernel existed
        ("sm3repro.SM3(variant=i, cover=dims, kernel=fused-cpp)", False),
        (
            "sm3repro.SM3(variant=ii, cover=dims, kernel=fused-cpp); word embedding: sparse rows",
            False,
        ),
        ("sm3repro.SM3(variant=i, cover=dims); word embedding: sparse rows", True),
        # since impl named what ran
        ("sm3repro.SM3(variant=ii, cover=dims, impl=fused)", False),
        ("sm3repro.SM3(variant=i, cover=rows, impl=fused); word embedding: sparse rows", False),
        ("sm3repro.SM3(variant=ii, cover=dims, impl=forloop)", True),
        ("sm3repro.SM3(variant=ii, cover=dims, impl=mixed)", True),
        ("torch.optim.Adam(fused=True)", False),
        (None, False),
        (float("nan"), False),
    ],
)
def test_sm3_ran_eager_reads_the_kernel_a_record_names(impl: object, eager: bool) -> None:
    assert sm3_ran_eager(impl) is eager


def test_eager_sm3_timing_is_marked_in_tables_one_and_three() -> None:
    runs = runs_frame()
    at = lambda opt, bs: (runs["optimizer"] == opt) & (runs["batch_size"] == bs)  # noqa: E731
    runs.loc[at("sm3_ii", 64), "optimizer_impl"] = EAGER_IMPL
    # sm3_i@512: one eager run, but its timing is blanked (contended) so no mean includes it
    runs.loc[at("sm3_i", 512) & (runs["seed"] == 0), ["optimizer_impl", "runtime_min"]] = [
        EAGER_IMPL, float("nan")
    ]  # fmt: skip
    stats = aggregate(runs)
    assert stats["sm3_eager"].to_dict() == {k: 2 * (k == ("sm3_ii", 64)) for k in stats.index}

    for table, columns, marked in (
        (table1(stats), TABLE1_COLUMNS, TABLE1_EAGER),
        (table3(stats), TABLE3_COLUMNS, TABLE3_EAGER),
    ):
        shown = mark_eager(display(table, columns), table, marked)
        flagged = {
            (table.loc[i, "optimizer"], table.loc[i, "batch_size"], header)
            for i in shown.index
            for header in shown.columns
            if EAGER_MARK in shown.loc[i, header]
        }
        assert flagged == {("sm3_ii", 64, header) for header in marked}
        plain = display(table, columns)  # the numbers themselves are untouched
        assert (shown.drop(columns=list(marked)) == plain.drop(columns=list(marked))).all().all()
    unmarked = table1(aggregate(runs_frame()))
    assert not has_eager(unmarked)
