"""The training state's checkpoint round trip: a restored state continues exactly."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from sm3repro.record.schema import EpochRow, Scores, StepRow
from sm3repro.run.state import TrainingState, lr_scheduler, weight_average


def _state(seed: int, run_id: str = "run") -> TrainingState:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return TrainingState(
        run_id, model, optimizer, lr_scheduler(optimizer, "linear", total_steps=40),
        weight_average(model, 0.9), torch.Generator().manual_seed(seed),
    )  # fmt: skip


def _steps(state: TrainingState, n: int) -> None:
    """Shuffled minibatches with dropout: every RNG stream and every state part is used."""
    x, y = torch.randn(64, 6, generator=torch.Generator().manual_seed(7)), torch.arange(64) % 3
    for _ in range(n):
        idx = torch.randperm(64, generator=state.generator)[:16]
        loss = nn.functional.cross_entropy(state.model(x[idx]), y[idx])
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
        state.scheduler.step()
        state.averaged.update_parameters(state.model)


def _through_bytes(checkpoint: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_state_dict_then_load_state_dict_continues_identically() -> None:
    original = _state(seed=0)
    _steps(original, 5)
    original.epoch = 1
    original.metrics = [StepRow(epoch=1, step=5, loss=1.25), EpochRow(
        epoch=1, train_loss=1.2, train_accuracy=0.4, dev_uas_micro=0.3, dev_las_micro=0.2,
        dev_uas_macro=0.31, dev_las_macro=0.21, epoch_time_s=0.5, examples_per_s=160.0,
        cpu_percent=99.0, system_cpu_percent=None, rss_mb=500.0,
    )]  # fmt: skip
    original.note_dev(1, Scores(uas_micro=0.3, las_micro=0.2, uas_macro=0.31, las_macro=0.21))
    original.elapsed = {"runtime_s": 3.5, "cpu_s": 6.0, "system_busy_s": 6.5, "steal_s": 0.25}
    checkpoint = _through_bytes(original.state_dict())

    _steps(original, 7)  # the uninterrupted run goes on...
    restored = _state(seed=1)  # ...a fresh process builds other weights, then loads
    restored.load_state_dict(checkpoint)
    _steps(restored, 7)

    for a, b in zip(original.model.parameters(), restored.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(original.averaged.parameters(), restored.averaged.parameters(), strict=True):
        assert torch.equal(a, b)
    assert restored.scheduler.get_last_lr() == original.scheduler.get_last_lr()
    assert (restored.epoch, restored.metrics, restored.elapsed) == (1, original.metrics, {
        "runtime_s": 3.5, "cpu_s": 6.0, "system_busy_s": 6.5, "steal_s": 0.25})  # fmt: skip
    assert restored.best.epoch == 1 and restored.best.dev == original.best.dev
    assert all(torch.equal(restored.best.weights[k], v) for k, v in original.best.weights.items())


def test_a_checkpoint_from_before_contention_metering_still_resumes() -> None:
    original = _state(seed=0)
    original.elapsed = {"runtime_s": 3.5, "cpu_s": 6.0, "system_busy_s": 6.5, "steal_s": 0.25}
    checkpoint = _through_bytes(original.state_dict())
    checkpoint["elapsed"] = {"runtime_s": 3.5, "cpu_s": 6.0}  # an older checkpoint's totals
    restored = _state(seed=1)
    restored.load_state_dict(checkpoint)
    assert restored.elapsed == {
        "runtime_s": 3.5,
        "cpu_s": 6.0,
        "system_busy_s": 0.0,
        "steal_s": 0.0,
    }


def test_a_checkpoint_of_another_run_is_refused() -> None:
    with pytest.raises(ValueError, match="not of"):
        _state(0, "run-b").load_state_dict(_state(0, "run-a").state_dict())
