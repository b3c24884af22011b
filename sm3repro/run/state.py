"""Everything a run needs to continue exactly where it stopped, and its checkpoint file.

``TrainingState.state_dict``/``load_state_dict`` are the two directions of one checkpoint, so
what is saved and what is restored cannot drift apart. A resumed run draws the same shuffles
and dropout masks and takes the same steps as an uninterrupted one.
"""

from __future__ import annotations

import copy
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from sm3repro.io import atomic_write_bytes
from sm3repro.record.schema import EpochRow, MetricsRow, Scores, metrics_row
from sm3repro.run.resources import ResourceMeter

log = logging.getLogger("sm3repro")
Row = TypeVar("Row")


def lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-step decay of every group's lr to 0 by the last step (None for a constant lr)."""
    from torch.optim import lr_scheduler as schedulers

    if schedule == "linear":
        return schedulers.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total_steps))
    if schedule == "cosine":
        return schedulers.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


def weight_average(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of the weights (Polyak averaging), updated every step;
    dev and test are scored with it. None when ``ema_decay`` is unset."""
    if decay is None:
        return None
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))


@dataclass
class BestEpoch:
    """The epoch with the highest dev LAS (micro) so far, and its scored weights."""

    epoch: int
    dev: Scores
    weights: dict[str, torch.Tensor]


# Meter totals carried across resumed segments: wall and CPU time, and the usable cores' busy
# and steal seconds (for the contention figures).
ELAPSED_KEYS = ("runtime_s", "cpu_s", "system_busy_s", "steal_s")


class TrainingState:
    """The model, optimizer, lr schedule, weight average and RNG streams, and the run's progress:
    the last finished epoch, its metrics rows, the best-dev epoch, and the training time of
    earlier segments (a resumed run's CPU% and runtime cover all of them)."""

    def __init__(
        self,
        run_id: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        averaged: AveragedModel | None,
        generator: torch.Generator,
    ) -> None:
        self.run_id = run_id
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.averaged = averaged
        self.generator = generator  # the shuffling order's own stream
        self.epoch = 0  # the last finished epoch
        self.metrics: list[MetricsRow] = []
        self.best: BestEpoch | None = None
        self.elapsed = dict.fromkeys(ELAPSED_KEYS, 0.0)  # meter totals of earlier segments
        self.meter: ResourceMeter | None = None  # this segment's meter, once training starts

    @property
    def evaluated(self) -> nn.Module:
        """The weights dev and test are scored with: the average when there is one."""
        return self.averaged.module if self.averaged is not None else self.model

    def epoch_rows(self) -> list[EpochRow]:
        return self.rows(EpochRow)

    def rows(self, kind: type[Row]) -> list[Row]:
        """The metrics rows of one kind, in order."""
        return [row for row in self.metrics if isinstance(row, kind)]

    def note_dev(self, epoch: int, dev: Scores) -> None:
        """Keep this epoch's weights if its dev LAS (micro) is the best so far."""
        if self.best is None or dev.las_micro > self.best.dev.las_micro:
            self.best = BestEpoch(epoch, dev, copy.deepcopy(self.evaluated.state_dict()))

    def state_dict(self) -> dict[str, Any]:
        segment = self.meter.peek() if self.meter is not None else {}
        best = self.best
        return {
            "run_id": self.run_id,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "averaged": self.averaged.state_dict() if self.averaged is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "shuffle": self.generator.get_state(),
                "numpy": np.random.get_state(),
            },
            "metrics": [row.to_dict() for row in self.metrics],
            "best": None
            if best is None
            else {"epoch": best.epoch, "dev": best.dev.to_dict(), "model": best.weights},
            "elapsed": {key: self.elapsed[key] + segment.get(key, 0.0) for key in ELAPSED_KEYS},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["run_id"] != self.run_id:
            raise ValueError(f"a checkpoint of run {state['run_id']}, not of {self.run_id}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.averaged is not None:
            self.averaged.load_state_dict(state["averaged"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["shuffle"])
        np.random.set_state(state["rng"]["numpy"])
        self.epoch = state["epoch"]
        self.metrics = [metrics_row(row) for row in state["metrics"]]
        best = state["best"]
        self.best = (
            None
            if best is None
            else BestEpoch(best["epoch"], Scores.from_dict(best["dev"]), best["model"])
        )
        # A checkpoint from before contention was metered lacks busy and steal seconds.
        self.elapsed = {**dict.fromkeys(ELAPSED_KEYS, 0.0), **state["elapsed"]}


def save_checkpoint(path: Path, state: TrainingState) -> None:
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def restore_checkpoint(path: Path, state: TrainingState) -> bool:
    """Load ``path`` into ``state``; False (start from epoch 1) when there is none, it is
    unreadable or it belongs to another run."""
    if not path.exists():
        return False
    try:
        checkpoint = torch.load(path, weights_only=False)
    except Exception as err:  # truncated or damaged: start the run again
        log.warning("checkpoint %s is unreadable (%s); restarting the run from epoch 1", path, err)
        return False
    if checkpoint.get("run_id") != state.run_id:
        return False
    state.load_state_dict(checkpoint)
    return True
