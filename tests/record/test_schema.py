"""The run record's schema reads every committed record back to the same JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sm3repro.record.schema import FINISHED, RunSummary, Status, metrics_row

# Finished records (the committed ones; a sweep running beside the tests adds unfinished ones).
RUNS = sorted(
    path
    for path in (Path(__file__).resolve().parents[2] / "results" / "runs").glob("*/summary.json")
    if json.loads(path.read_text()).get("status") in FINISHED
)


@pytest.mark.parametrize("path", RUNS, ids=[p.parent.name for p in RUNS])
def test_committed_records_read_back_to_the_same_json(path: Path) -> None:
    summary = json.loads(path.read_text())
    record = RunSummary.from_dict(summary)
    assert record.status in FINISHED and record.to_dict() == summary
    for line in (path.parent / "metrics.jsonl").read_text().splitlines():
        assert json.dumps(metrics_row(json.loads(line)).to_dict()) == line  # key order too


def test_a_running_summary_leaves_out_the_sections_it_has_not_reached() -> None:
    running = RunSummary(
        run_id="sgd-b64-s0-x", status=Status.RUNNING, optimizer="sgd", optimizer_impl="torch",
        batch_size=64, seed=0, epochs=2, experiment="default", group="default", data={},
        provenance={},
    )  # fmt: skip
    assert json.loads(json.dumps(running.to_dict())) == {
        "run_id": "sgd-b64-s0-x", "status": "running", "optimizer": "sgd",
        "optimizer_impl": "torch", "batch_size": 64, "seed": 0, "epochs": 2,
        "epochs_completed": 0, "experiment": "default", "group": "default", "data": {},
        "provenance": {}, "reason": None,
    }  # fmt: skip
    assert running.dev_metric("final.dev.las_macro") is None  # nothing to optimise yet
    with pytest.raises(TypeError, match="no field 'colour'"):
        RunSummary.from_dict({**running.to_dict(), "colour": "red"})


def test_dev_metric_names_a_dev_score_and_never_test() -> None:
    summary = RunSummary.from_dict(json.loads(RUNS[0].read_text()))
    assert summary.dev_metric("best_dev.dev.uas_micro") == summary.best_dev.dev.uas_micro
    assert summary.dev_metric("final.dev.las_macro") == summary.final.dev.las_macro
    with pytest.raises(ValueError, match="final.test.las_macro"):
        summary.dev_metric("final.test.las_macro")
