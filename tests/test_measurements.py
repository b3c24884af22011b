"""What claims 3 and 4 rest on: runtime and CPU time cover training only, add up over a resume,
and CPU% is on the 0-100 scale of the usable cores."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from conftest import SMALL, harness_env, read_records
from inprocess import train_tiny

from sm3repro import resources, train
from sm3repro.resources import ResourceMeter

SPIN_S = 2.0  # CPU-busy seconds added to every dev evaluation


def spin(seconds: float) -> None:
    """Burn CPU (not sleep), so a leak shows in CPU time as well as in wall time."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def epoch_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "epoch"]


def test_runtime_and_cpu_time_exclude_dev_evaluation(tmp_path, ewt_dir, monkeypatch) -> None:
    evaluate, dev_calls = train.evaluate, []

    def slow_dev_evaluation(model, data, split, cfg):
        if split is data.dev:
            dev_calls.append(1)
            spin(SPIN_S)
        return evaluate(model, data, split, cfg)

    monkeypatch.setattr(train, "evaluate", slow_dev_evaluation)
    summary = train_tiny(tmp_path, ewt_dir, "epochs=2", "batch_size=128")
    assert len(dev_calls) == 2
    r = summary["resources"]
    trained_s = sum(
        row["epoch_time_s"]
        for row in epoch_rows(Path(tmp_path / "results" / "runs" / summary["run_id"]))
    )
    # counted, the two evaluations would add 2 x SPIN_S of wall and CPU time
    assert r["runtime_s"] < trained_s + SPIN_S / 2, (r, trained_s)
    assert r["cpu_s"] < trained_s * r["usable_cores"] + SPIN_S / 2, (r, trained_s)
    assert r["paused_s"] >= 2 * SPIN_S  # the meter saw the evaluations and set them apart
    assert r["cpu_percent"] == pytest.approx(
        100 * r["cpu_s"] / r["runtime_s"] / r["usable_cores"], abs=0.02
    )


def test_a_resumed_run_adds_up_its_segments(run_harness, tmp_path, ewt_dir) -> None:
    args = ["optimizer=sm3_ii", *SMALL, "epochs=2", "logger=none"]
    killed = run_harness(*args, env=harness_env(tmp_path, ewt_dir, SM3REPRO_FAULT="kill_after_epoch:1"),
                         check=False)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    run_harness(*args)
    reference_env = harness_env(tmp_path, ewt_dir, SM3REPRO_RESULTS=str(tmp_path / "reference"))
    run_harness(*args, env=reference_env)
    [(run_id, resumed)] = read_records(tmp_path / "results").items()
    reference = read_records(tmp_path / "reference")[run_id]
    assert resumed["resumed_from_epoch"] == 1

    rows = epoch_rows(tmp_path / "results" / "runs" / run_id)
    r = resumed["resources"]
    trained_s = sum(row["epoch_time_s"] for row in rows)  # epoch 1 ran in the killed process
    assert 0.8 * trained_s <= r["runtime_s"] <= trained_s + 1.0, (r, rows)
    # CPU seconds of both segments, from each epoch's CPU% and wall time
    cpu_s = sum(row["cpu_percent"] / 100 * r["usable_cores"] * row["epoch_time_s"] for row in rows)
    expected_percent = 100 * cpu_s / r["runtime_s"] / r["usable_cores"]
    assert r["cpu_percent"] == pytest.approx(expected_percent, rel=0.25), (r, rows)
    assert r["runtime_min"] == pytest.approx(r["runtime_s"] / 60, abs=1e-3)
    # and the totals are those of the same run done in one go, within contended-timing noise
    ratio = r["runtime_s"] / reference["resources"]["runtime_s"]
    assert 0.5 < ratio < 2.0, ratio


@pytest.mark.parametrize("cores", [1, 4])
def test_cpu_percent_divides_by_the_usable_cores(monkeypatch, cores: int) -> None:
    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert resources.usable_cores() == cores
    meter = ResourceMeter(interval=0.05).start()
    spin(0.3)
    epoch = meter.mark_epoch()
    spin(0.2)
    totals = meter.stop()
    assert totals["usable_cores"] == cores
    for part, wall, cpu in ((epoch, "wall_s", "cpu_s"), (totals, "runtime_s", "cpu_s")):
        assert part[cpu] > 0.05
        assert part["cpu_percent"] == pytest.approx(100 * part[cpu] / part[wall] / cores, abs=0.02)
    # one busy thread can hold at most one core: 100 / cores
    assert totals["cpu_percent"] <= 100 / cores + 1
    assert totals["runtime_s"] >= 0.5 and epoch["wall_s"] >= 0.3
