"""Which runs a report uses (the experiment's grid), and the claim and optimizer records."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import BASE, grid_run_id, make_run, write_results, write_run

from sm3repro.optim import catalog
from sm3repro.optim.catalog import CATALOG
from sm3repro.record.reader import finished_count, read_records
from sm3repro.report import claims, figures
from sm3repro.report import results as report_results
from sm3repro.report.claims import CLAIMS, judge_all
from sm3repro.report.results import load_runs
from sm3repro.report.tables import aggregate, table1
from sm3repro.run.grid import grid_run_ids

COMMITTED_RUNS = Path(__file__).resolve().parents[2] / "results" / "runs"


def committed(experiment: str) -> list[str]:
    return sorted(
        p.parent.name
        for p in COMMITTED_RUNS.glob("*/summary.json")
        if json.loads(p.read_text())["experiment"] == experiment
    )


def test_grids_give_the_committed_run_ids() -> None:
    """Composing an experiment like its sweep gives the ids training gave its records."""
    assert sorted(grid_run_ids("paper")) == committed("paper") and len(committed("paper")) == 30
    assert grid_run_ids("best_parser") == committed("best_parser")  # no sweep: one run


def relabel(results: Path, run_id: str, label: str) -> None:
    """What rerunning the same config from another command leaves: the same id, a new label."""
    path = results / "runs" / run_id / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(experiment=label, group=label)
    path.write_text(json.dumps(summary))


@pytest.mark.parametrize("experiment", ["paper", None])
def test_identical_run_under_another_label_stays(tmp_path: Path, experiment) -> None:
    results = write_results(tmp_path, epochs=2, bad_runs=False)
    run_id = grid_run_id("sm3_ii", 64, 0, "paper")
    relabel(results, run_id, "default")  # `python -m sm3repro.train optimizer=sm3_ii batch_size=64`
    loaded = load_runs(results, experiment)
    assert loaded.experiment == "paper"
    assert run_id in set(loaded.runs["run_id"]) and loaded.excluded.empty
    assert len(loaded.runs) == 30


def test_run_outside_the_grid_is_left_out(tmp_path: Path) -> None:
    results = write_results(tmp_path, epochs=2, bad_runs=False)
    # same optimizer, batch, seed and label, but a config the paper sweep does not run
    other = grid_run_ids("paper", ["data.max_train_sentences=300"])[0]
    summary, metrics = make_run("sm3_ii", 64, 0, BASE[("sm3_ii", 64)], 2)
    write_run(results, {**summary, "run_id": other}, metrics)
    loaded = load_runs(results, "paper")
    assert other not in set(loaded.runs["run_id"]) and len(loaded.runs) == 30
    assert loaded.excluded.set_index("run_id").loc[other].tolist() == [
        "not in the grid",
        "not in the paper grid",
    ]
    # the same run is a member of the grid swept with that override
    assert load_runs(results, "paper", ["data.max_train_sentences=300"]).runs[
        "run_id"
    ].tolist() == [other]


def test_missing_grid_runs_are_named(tmp_path: Path) -> None:
    results = write_results(tmp_path, optimizers=("sm3_ii", "adam"), batches=(64,), seeds=(0,))
    notes = " ".join(load_runs(results, "paper").notes)
    assert "28 of the `paper` grid's 30 runs have no completed record" in notes
    assert f"`{grid_run_id('sgd', 512, 2, 'paper')}`" in notes
    assert f"`{grid_run_id('adam', 64, 0, 'paper')}`" not in notes


def test_without_an_experiment_config_the_label_decides(tmp_path: Path) -> None:
    results = write_results(tmp_path, optimizers=("sgd",), seeds=(0,), bad_runs=False)
    write_results(tmp_path, optimizers=("adam",), seeds=(0,), bad_runs=False, experiment="adhoc")
    loaded = load_runs(results, "adhoc")
    assert set(loaded.runs["optimizer"]) == {"adam"}
    # the other experiment's runs are counted by label, not listed as exclusions
    assert loaded.excluded.empty and loaded.other_experiments == {"paper": 2}
    assert "No experiment config `adhoc`" in loaded.notes[0]


def test_a_grid_with_more_axes_counts_each_cell_once(tmp_path: Path, monkeypatch) -> None:
    """E.g. lr_grid: two runs share (optimizer, batch, seed); the later one is kept."""
    results = write_results(tmp_path, optimizers=("adam",), seeds=(0,), bad_runs=False)
    earlier, metrics = make_run("adam", 64, 0, BASE[("adam", 64)], 2)
    earlier["run_id"] += "-lr0.1"
    earlier["provenance"]["finished_at"] = "2024-12-31T00:00:00+00:00"
    write_run(results, earlier, metrics)
    grid = [*grid_run_ids("paper"), earlier["run_id"]]
    monkeypatch.setattr(report_results, "grid_run_ids", lambda experiment, overrides: grid)
    loaded = load_runs(results, "paper")
    assert loaded.excluded.set_index("run_id").loc[earlier["run_id"], "status"] == "duplicate"
    assert len(loaded.runs) == 2


def test_one_status_rule_for_every_reader(tmp_path: Path) -> None:
    """record.reader decides what a record is, once: the report lists what it leaves out with
    the reader's status, and a grid counts the reader's finished records."""
    results = write_results(tmp_path, optimizers=("adam",), batches=(64,), seeds=(0,), epochs=2)
    summary, metrics = make_run("sgd", 64, 0, BASE[("sgd", 64)], 2)
    write_run(results, {**summary, "run_id": "sgd-extra-field", "surprise": 1}, metrics)
    write_run(results, {**summary, "run_id": "sgd-no-optimizer", "optimizer": ""}, metrics)
    records = read_records(results)
    assert records["adam-b512-s99-diverged"].status == "diverged"
    assert records["adam-b512-s99-diverged"].finished
    assert not records["adam-b512-s99-diverged"].completed
    assert records["sgd-b64-s98-truncated"].status == "unreadable"
    assert "surprise" in records["sgd-extra-field"].reason  # outside the schema
    assert records["sgd-no-optimizer"].reason == "no optimizer/batch_size"
    adam = grid_run_id("adam", 64, 0, "paper")
    assert records[adam].completed and records[adam].summary.optimizer == "adam"
    assert finished_count(records, [adam, "adam-b512-s99-diverged", "sgd-extra-field"]) == 2
    excluded = load_runs(results, "paper").excluded.set_index("run_id")["status"].to_dict()
    assert excluded == {
        "adam-b512-s99-diverged": "diverged", "sgd-b64-s98-truncated": "unreadable",
        "sgd-extra-field": "unreadable", "sgd-no-optimizer": "unreadable",
    }  # fmt: skip


# -- claims ------------------------------------------------------------------------------


def test_tiers_and_named_optimizers_are_entries_of_the_claims() -> None:
    """A claim's tiers say what judges them; the report's tier rows and the verdicts' wait come
    from the entries, not from claim numbers written elsewhere."""
    from sm3repro.report import speed_claims
    from sm3repro.report import time_to_target as ttt
    from sm3repro.report.judge import INTERVALS, MEMORY_ARM

    figures = {*ttt.RUN_FIGURES, "ttt_s", "cpu_s_to_target"}  # speed_claims.run_table's
    for claim in CLAIMS:
        for tier in claim.tiers:
            assert tier.judged_by in (INTERVALS, MEMORY_ARM), claim.number
            if tier.judged_by == INTERVALS:
                assert tier.figure in figures, (claim.number, tier)
            else:
                assert tier.width in ("smallest", "largest"), (claim.number, tier)
        assert bool(claim.tiers) == bool(claim.below)  # a tier compares SM3-II with someone
    assert speed_claims.TIER_NAMES == ("fixed epochs", "time to target", "optimizer step")
    assert [c.number for c in speed_claims.TIERED] == [3, 4]
    assert claims.named_optimizers() == {"sm3_ii", "sm3_i", "sgd", "adagrad", "adam"}
    assert claims.timing_claims() == [3, 4] and claims.claims_reading("cpu_s_per_1k") == [4]
    assert [claims.claims_text(n) for n in ([4], [3, 4], [1, 2, 5])] == [
        "claim 4", "claims 3 and 4", "claims 1, 2 and 5",
    ]  # fmt: skip


def test_each_claim_is_one_complete_record() -> None:
    numbers = [claim.number for claim in CLAIMS]
    assert numbers == sorted(set(numbers))
    for claim in CLAIMS:
        assert claim.statement and claim.rule and claim.checks
        for threshold in claim.thresholds:  # the rule states every threshold it applies
            assert f"{threshold.value:.0%}" in claim.rule, (claim.number, threshold)
    legend = claims.thresholds()
    used = {t for claim in CLAIMS for t in claim.thresholds}
    assert legend.count(";") == len(used) - 1
    assert all(t.describe() in legend for t in used)


def test_each_check_is_observable(tmp_path: Path) -> None:
    results = write_results(
        tmp_path, epochs=2, bad_runs=False, tweaks={("sm3_ii", 64): {"runtime_min": 15.0}}
    )
    judged = {r.claim.number: r for r in judge_all(aggregate(load_runs(results).runs))}
    claim3 = judged[3]
    assert claim3.verdict == "does not hold"
    failed = {(r.check.batch, r.check.other) for r in claim3.checks if r.outcome is False}
    assert failed == {(64, "adam"), (64, "adagrad"), (64, "sgd")}  # SM3-II slower than all
    assert all(r.outcome is True for r in claim3.checks if r.check.batch == 512)
    assert len(claim3.evidence.split("; ")) == len(claim3.checks)
    # claim 4's CPU-s per 1k examples scale with the runtime: 38.3% x 15 min is still below
    # Adam's 53.7% x 13.1 min at batch 64, but above Adagrad's 42.8% x 10.3 min
    failed = {(r.check.batch, r.check.other) for r in judged[4].checks if r.outcome is False}
    assert failed == {(64, "adagrad")}


# -- optimizers ----------------------------------------------------------------------------


def test_a_sixth_optimizer_reaches_tables_and_figures(tmp_path: Path) -> None:
    for opt in ("adam", "adafactor", "sm3_ii"):
        for seed in (0, 1):
            write_run(tmp_path, *make_run(opt, 64, seed, BASE[("adam", 64)], 2, "adhoc"))
    loaded = load_runs(tmp_path)
    rows = table1(aggregate(loaded.runs))
    assert rows.loc[rows["n"] > 0, "optimizer"].tolist() == ["sm3_ii", "adam", "adafactor"]

    drawn = figures.plot_curves(loaded.curves, {"train_loss": "loss"}, "t")
    legend = [text.get_text() for text in drawn.legends[0].get_texts()]
    assert legend == ["SM3-II", "Adam", "Adafactor"]
    assert catalog.ordered(["adafactor", "adam", "sm3_i"]) == ["sm3_i", "adam", "adafactor"]


def test_report_rows_follow_the_display_order(tmp_path: Path) -> None:
    results = write_results(tmp_path, epochs=2, bad_runs=False)
    t1 = table1(aggregate(load_runs(results).runs))
    shown = list(pd.unique(t1["optimizer"]))
    assert shown == [name for name in CATALOG if name in shown]
