"""What the timed arm records (sm3repro/step_timing.py, epoch.py, train.py): dev points within
epochs on the training-time axis, per-phase step times, and the host's speed, all without
changing what is trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from inprocess import train_tiny

from sm3repro.record.schema import CalibrationRow, DevPoint, Phases, metrics_row
from sm3repro.run.step_timing import PHASES, calibrate_host, host_speed, step_cost


def records(tmp_path: Path, summary: dict) -> list:
    run_dir = tmp_path / "results" / "runs" / summary["run_id"]
    return [metrics_row(json.loads(line)) for line in (run_dir / "metrics.jsonl").open()]


def test_extra_dev_points_and_phase_timing_leave_training_bit_identical(tmp_path, ewt_dir):
    runs = {
        "plain": ("dev_evals_per_epoch=1", "time_phases=false"),
        "measured": ("dev_evals_per_epoch=4", "time_phases=true"),
    }
    out = {}
    for name, overrides in runs.items():
        folder = tmp_path / name
        summary = train_tiny(folder, ewt_dir, "optimizer=sm3_ii", "epochs=2", "batch_size=32",
                             "model.word_dropout=0.1", *overrides)  # fmt: skip
        rows = records(folder, summary)
        losses = [(r.step, r.loss) for r in rows if r.kind == "step"]
        predictions = folder / "results" / "runs" / summary["run_id"] / "predictions.conllu"
        out[name] = (summary, losses, predictions.read_text(), rows)
    (plain, plain_losses, plain_parses, plain_rows) = out["plain"]
    (measured, measured_losses, measured_parses, measured_rows) = out["measured"]
    assert plain["run_id"] == measured["run_id"]  # measurement settings are not identity
    assert len(plain_losses) > 10 and plain_losses == measured_losses  # every logged loss
    assert plain_parses == measured_parses
    assert plain["final"] == measured["final"] and plain["best_dev"] == measured["best_dev"]
    assert sum(isinstance(r, DevPoint) for r in plain_rows) == 2
    assert sum(isinstance(r, DevPoint) for r in measured_rows) == 8
    assert "step_cost" not in plain and "step_cost" in measured


def test_dev_points_lie_on_the_training_time_axis(tmp_path, ewt_dir):
    summary = train_tiny(tmp_path, ewt_dir, "epochs=2", "batch_size=64", "dev_evals_per_epoch=3")
    rows = records(tmp_path, summary)
    epochs = [r for r in rows if r.kind == "epoch"]
    points = [r for r in rows if isinstance(r, DevPoint)]
    steps_per_epoch = -(-summary["data"]["train_examples"] // 64)
    assert [p.epoch for p in points] == [1, 1, 1, 2, 2, 2]
    assert [p.step for p in points] == [
        round(k * steps_per_epoch / 3) + e * steps_per_epoch for e in (0, 1) for k in (1, 2, 3)
    ]
    times = [p.train_s for p in points]
    assert times == sorted(times) and times[0] > 0
    # the point at an epoch's end is that epoch's row: its scores, the epochs' seconds so far
    for k, row in enumerate(epochs):
        end = points[3 * k + 2]
        assert end.train_s == pytest.approx(sum(e.epoch_time_s for e in epochs[: k + 1]), abs=2e-3)
        assert end.dev_las_macro == row.dev_las_macro and end.dev_uas_micro == row.dev_uas_micro


def test_phases_add_up_to_the_epoch_and_the_summary_derives_from_them(tmp_path, ewt_dir):
    summary = train_tiny(tmp_path, ewt_dir, "epochs=2", "batch_size=64", "dev_evals_per_epoch=2")
    rows = records(tmp_path, summary)
    epochs = [r for r in rows if r.kind == "epoch"]
    for row in epochs:
        assert set(row.phases.wall_s) == set(PHASES) == set(row.phases.cpu_s)
        assert all(v > 0 for v in row.phases.wall_s.values())
        # the inner dev point is in neither the phases nor the epoch's seconds
        assert sum(row.phases.wall_s.values()) == pytest.approx(row.epoch_time_s, abs=0.01)
    cost = summary["step_cost"]
    total = sum((row.phases for row in epochs[1:]), epochs[0].phases)
    wall = total.wall_s
    assert cost["phases"]["steps"] == 2 * -(-summary["data"]["train_examples"] // 64)
    assert cost["optimizer_ms_per_step"] == pytest.approx(
        1000 * wall["optimizer"] / total.steps, rel=1e-3
    )
    assert cost["optimizer_overhead"] == pytest.approx(
        wall["optimizer"] / (wall["forward"] + wall["backward"]), rel=1e-3
    )
    assert 0 < cost["max_saving_from_optimizer"] < cost["optimizer_share"] < 1
    examples = 2 * summary["data"]["train_examples"]
    assert cost["optimizer_cpu_s_per_1k_examples"] == pytest.approx(
        1000 * total.cpu_s["optimizer"] / examples, rel=1e-3, abs=1e-6
    )
    # the host's speed before and after the run's one segment
    calibrations = [r for r in rows if isinstance(r, CalibrationRow)]
    assert [(c.segment, c.when) for c in calibrations] == [(1, "start"), (1, "end")]
    assert rows[0] is calibrations[0] and all(c.ms > 0 for c in calibrations)
    speed = summary["host_speed"]
    assert speed["calibration_ms"] == [c.ms for c in calibrations]
    assert speed["spread"] == pytest.approx(
        max(speed["calibration_ms"]) / min(speed["calibration_ms"]), abs=1e-4
    )


def test_calibration_leaves_the_runs_random_streams_alone() -> None:
    features = torch.randint(0, 50, (300, 48))
    gold = torch.randint(0, 5, (300,))

    def model() -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Embedding(50, 4), torch.nn.Flatten(), torch.nn.Dropout(0.5),
            torch.nn.Linear(48 * 4, 5),
        )  # fmt: skip

    torch.manual_seed(7)
    before = torch.get_rng_state()
    ms = calibrate_host(model, features, gold)
    assert ms > 0 and torch.equal(torch.get_rng_state(), before)


def test_step_cost_and_host_speed_by_hand() -> None:
    one = Phases(steps=10, wall_s={"forward": 0.2, "backward": 0.4, "optimizer": 0.1, "rest": 0.3},
                 cpu_s={"forward": 0.4, "backward": 0.8, "optimizer": 0.2, "rest": 0.3})  # fmt: skip
    two = Phases(steps=30, wall_s={"forward": 0.6, "backward": 1.2, "optimizer": 0.3, "rest": 0.9},
                 cpu_s={"forward": 1.2, "backward": 2.4, "optimizer": 0.6, "rest": 0.9})  # fmt: skip
    cost = step_cost([one, two], examples=4000)
    assert cost.phases.steps == 40
    assert cost.optimizer_ms_per_step == pytest.approx(10.0)  # 0.4 s / 40 steps
    assert cost.forward_backward_ms_per_step == pytest.approx(60.0)
    assert cost.optimizer_share == pytest.approx(0.4 / 2.8, abs=5e-6)
    assert cost.optimizer_overhead == pytest.approx(0.4 / 2.4, abs=5e-6)
    assert cost.max_saving_from_optimizer == pytest.approx(0.4 / 4.0, abs=5e-6)
    assert cost.optimizer_cpu_s_per_1k_examples == pytest.approx(0.2)  # 0.8 CPU-s / 4k
    assert step_cost([], examples=10) is None
    rows = [CalibrationRow(segment=1, when=w, ms=ms, at="") for w, ms in
            (("start", 2.0), ("end", 2.2), ("start", 3.0))]  # fmt: skip
    speed = host_speed(rows)
    assert speed.calibration_ms == [2.0, 2.2, 3.0]
    assert speed.median_ms == 2.2 and speed.spread == 1.5
    assert host_speed([]) is None
