"""Time to target (report/time_to_target.py) and the interval rule (report/intervals.py), on
records written here with scripted dev curves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from report_fixtures import BASE, make_run, write_run
from scipy import stats

from sm3repro.record.schema import DevPoint
from sm3repro.report import time_to_target as ttt
from sm3repro.report.intervals import ratio_interval
from sm3repro.report.results import Results


# -- the interval rule ---------------------------------------------------------------------
def test_a_paired_ratio_is_the_geometric_mean_ratio_with_a_t_interval_on_log_differences():
    a, b = [2.1, 1.9, 2.4, 2.0], [1.0, 1.0, 1.1, 0.95]
    r = ratio_interval(a, b, paired=True)
    d = np.log(a) - np.log(b)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert r.ratio == pytest.approx(math.exp(d.mean()))
    assert (r.low, r.high) == pytest.approx((math.exp(d.mean() - half), math.exp(d.mean() + half)))
    assert r.verdict == "slower" and r.text().startswith("2.")
    assert ratio_interval(b, a, paired=True).verdict == "faster"
    with pytest.raises(ValueError, match="paired"):
        ratio_interval([1.0, 2.0], [1.0], paired=True)


def test_unpaired_ratios_use_welch_and_equal_times_are_equivalent_by_tost():
    a, b = [4.00, 4.10, 4.20, 4.05], [4.10, 4.05, 4.20, 4.00]
    r = ratio_interval(a, b, paired=False)
    ci = stats.ttest_ind(np.log(a), np.log(b), equal_var=False).confidence_interval()
    assert (r.low, r.high) == pytest.approx((math.exp(ci.low), math.exp(ci.high)))
    assert r.low < 1 < r.high and r.equivalence_p < 0.05 and r.verdict == "equivalent"
    # the same spread around a 20% gap: neither faster nor equivalent within 10%
    wide = ratio_interval([4.0, 5.6, 4.4, 5.4], [4.1, 4.0, 4.2, 4.05], paired=False)
    assert wide.low < 1 < wide.high and wide.verdict == "undecided"


def test_misses_decide_only_when_one_side_always_misses_and_the_other_never():
    inf = math.inf
    assert ratio_interval([inf, inf], [1.0, 2.0], paired=False).verdict == "slower"
    assert ratio_interval([1.0, 2.0], [inf, inf], paired=False).verdict == "faster"
    assert ratio_interval([inf, 1.0], [1.0, 2.0], paired=False).verdict == "undecided"
    assert ratio_interval([inf, inf], [inf, 2.0], paired=False).verdict == "undecided"
    assert ratio_interval([inf, 1.0], [1.0, 2.0], paired=False).text() == "∞ (1/2 vs 0/2 missed)"


# -- time to target ------------------------------------------------------------------------
def write_curve_run(results: Path, optimizer: str, batch: int, seed: int, curve: list[tuple],
                    experiment: str = "tuned_lr", **resources) -> str:  # fmt: skip
    """A completed run whose dev points are ``curve`` [(train_s, dev LAS macro)]."""
    summary, metrics = make_run(optimizer, batch, seed, dict(BASE[(optimizer, batch)]), epochs=2,
                                experiment=experiment)  # fmt: skip
    summary["resources"].update(resources)
    points = [DevPoint(epoch=1, step=10 * (k + 1), train_s=s, dev_uas_micro=las, dev_las_micro=las,
                       dev_uas_macro=las, dev_las_macro=las).to_dict()
              for k, (s, las) in enumerate(curve)]  # fmt: skip
    write_run(results, summary, metrics + points)
    return summary["run_id"]


RISING = [(10.0, 0.60), (20.0, 0.75), (30.0, 0.79), (40.0, 0.80)]


def test_targets_come_from_the_best_baseline_and_times_are_the_first_point_reaching_them(
    tmp_path: Path,
) -> None:
    for seed in (1, 2, 3):
        write_curve_run(tmp_path, "adagrad", 64, seed, RISING)  # best 0.80: sets the level
        write_curve_run(tmp_path, "adam", 64, seed, [(5.0, 0.70), (50.0, 0.78)])
        write_curve_run(tmp_path, "sgd", 64, seed, [(5.0, 0.70), (9.0, 0.72)])
        # SM3 beats every baseline's best, yet must not move the targets
        write_curve_run(tmp_path, "sm3_ii", 64, seed, [(60.0, 0.70), (70.0, 0.90)])
    curves = ttt.load_curves(Results(tmp_path))
    ladder = ttt.targets(curves.points, fractions=(0.95, 0.99))
    assert ladder[["baseline", "baseline_best"]].drop_duplicates().values.tolist() == [
        ["adagrad", 0.80]
    ]
    assert ladder["target"].tolist() == pytest.approx([0.76, 0.792])
    times = ttt.times_to_target(curves.points, ladder).set_index(["variant", "seed", "fraction"])
    assert times.loc[("adagrad", 1, 0.95), "seconds"] == 30.0  # 0.79 >= 0.76, first at 30 s
    assert times.loc[("adagrad", 1, 0.99), "seconds"] == 40.0
    assert times.loc[("adam", 2, 0.95), "seconds"] == 50.0
    assert math.isinf(times.loc[("adam", 2, 0.99), "seconds"])  # never reaches: infinite
    assert math.isinf(times.loc[("sgd", 3, 0.95), "seconds"])
    assert times.loc[("sm3_ii", 1, 0.95), "seconds"] == 70.0
    compared = ttt.compare_to_reference(ttt.times_to_target(curves.points, ladder))
    row = compared.set_index(["optimizer", "fraction"])
    assert row.loc[("Adagrad", 0.95), "ratio_to_adam"].startswith("0.60")  # 30 / 50
    assert row.loc[("SGD", 0.95), "verdict_vs_adam"] == "slower"  # all miss, Adam never does
    assert row.loc[("SM3-II", 0.99), "verdict_vs_adam"] == "faster"  # Adam always misses 0.99


def test_untrusted_runs_are_left_out_and_old_records_give_epoch_resolution(tmp_path: Path) -> None:
    write_curve_run(tmp_path, "adagrad", 64, 1, RISING)
    write_curve_run(tmp_path, "adagrad", 64, 2, RISING, contended=True)
    write_curve_run(tmp_path, "adagrad", 64, 3, RISING, torch_threads=1)
    resumed = write_curve_run(tmp_path, "adagrad", 64, 4, RISING)
    path = tmp_path / "runs" / resumed / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "resumed_from_epoch": 1}))
    # a record from before dev points: its epoch rows, on cumulative epoch seconds
    summary, metrics = make_run("adam", 64, 1, dict(BASE[("adam", 64)]), epochs=2,
                                experiment="tuned_lr")  # fmt: skip
    write_run(tmp_path, summary, metrics)
    curves = ttt.load_curves(Results(tmp_path))
    assert curves.left_out == 3
    assert sorted(curves.points["seed"].unique()) == [1]
    adam = curves.points[curves.points["variant"] == "adam"]
    epochs = [m for m in metrics if m["kind"] == "epoch"]
    assert adam["train_s"].tolist() == pytest.approx(np.cumsum([e["epoch_time_s"] for e in epochs]))
    assert adam["dev_las_macro"].tolist() == [e["dev_las_macro"] for e in epochs]
    assert set(adam["resolution"]) == {"epoch"}
    assert set(curves.points.loc[curves.points["variant"] == "adagrad", "resolution"]) == {
        "within epochs"
    }


def test_the_timed_arm_pairs_by_seed_and_keeps_sparse_rows_apart(tmp_path: Path) -> None:
    for seed, scale in ((0, 1.0), (1, 1.5), (2, 0.7)):  # each block on a faster or slower host
        curve = [(s * scale, las) for s, las in RISING]
        write_curve_run(tmp_path, "adam", 64, seed, curve, experiment="timed")
        write_curve_run(tmp_path, "adagrad", 64, seed, curve, experiment="timed")
        slower = [(s * scale * 2, las) for s, las in RISING]
        run_id = write_curve_run(tmp_path, "sm3_ii", 64, seed, slower, experiment="timed")
        path = tmp_path / "runs" / run_id / "summary.json"
        summary = json.loads(path.read_text())
        summary["optimizer_impl"] += "; word embedding: sparse rows"
        summary["run_id"] = run_id + "-sparse"
        write_run(tmp_path, summary, [json.loads(line) for line in
                                      (path.parent / "metrics.jsonl").open()])  # fmt: skip
    times = ttt.times_to_target(ttt.load_curves(Results(tmp_path)).points, ttt.targets(
        ttt.load_curves(Results(tmp_path)).points, fractions=(0.95,)))  # fmt: skip
    compared = ttt.compare_to_reference(times).set_index("optimizer")
    assert {"SM3-II", "SM3-II (sparse rows)"} <= set(compared.index)
    # paired by block, the host's speed cancels: exactly 2x and exactly 1x, zero-width intervals
    assert compared.loc["SM3-II (sparse rows)", "ratio_to_adam"] == "2.00 [2.00, 2.00]"
    assert compared.loc["SM3-II", "verdict_vs_adam"] == "slower"
    assert compared.loc["Adagrad", "verdict_vs_adam"] == "equivalent"


# -- adding seeds where undecided ------------------------------------------------------------
def test_spent_alpha_splits_alpha_over_the_looks() -> None:
    from sm3repro.report.intervals import ALPHA, SEED_CAP, SEED_GROUP, spent_alpha

    looks = [spent_alpha(n) for n in range(SEED_GROUP, SEED_CAP + 1, SEED_GROUP)]
    assert sum(looks) == pytest.approx(ALPHA) and looks == sorted(looks, reverse=True)
    assert spent_alpha(1) == spent_alpha(SEED_GROUP) and spent_alpha(50) == looks[-1]


def load_decide():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "decide.py"
    spec = importlib.util.spec_from_file_location("decide", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decide_grows_only_the_undecided_cells_with_the_next_seed_group(tmp_path, capsys):
    decide = load_decide()
    assert decide.main(["--results", str(tmp_path), "--dry-run"]) == 1  # no timed arm yet
    noisy = {0: 1.0, 1: 1.6, 2: 0.7}
    for seed in (0, 1, 2):
        write_curve_run(tmp_path, "adam", 64, seed, RISING, experiment="timed")
        write_curve_run(tmp_path, "adagrad", 64, seed, RISING, experiment="timed")
        write_curve_run(tmp_path, "sgd", 64, seed, RISING, experiment="timed")
        # SM3-II's times scattered around Adam's: its comparisons stay undecided
        curve = [(s * noisy[seed], las) for s, las in RISING]
        write_curve_run(tmp_path, "sm3_ii", 64, seed, curve, experiment="timed")
    runs, found = decide.timed_runs(tmp_path)
    grow = decide.cells_to_grow(runs, found)
    assert (
        set(grow) == {64}
        and "sm3_ii" in grow[64]
        and grow[64] <= {"sm3_ii", "adam", "adagrad", "sgd"}
    )
    assert decide.main(["--results", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    sweeps = [line for line in out.splitlines() if line.startswith("+ ")]
    assert [s.split("seed=")[1].split()[0] for s in sweeps] == ["3", "4", "5"]  # the next group
    assert all("experiment=timed" in s and "batch_size=64" in s for s in sweeps)


def test_damaged_records_are_skipped_not_fatal(tmp_path: Path) -> None:
    good = write_curve_run(tmp_path, "adam", 64, 0, RISING)
    truncated = write_curve_run(tmp_path, "adam", 64, 1, RISING)
    (tmp_path / "runs" / truncated / "metrics.jsonl").write_text('{"kind": "epoch", "epo')
    sparse = tmp_path / "runs" / "sparse-run"
    sparse.mkdir()
    (sparse / "summary.json").write_text('{"run_id": "sparse-run", "status": "completed"}')
    curves = ttt.load_curves(Results(tmp_path))
    assert set(curves.points["run_id"]) == {good}
