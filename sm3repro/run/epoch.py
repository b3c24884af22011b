"""One epoch of training: a shuffled pass of minibatch steps over the featurized train set.

Dev parsing is not part of it (train.evaluate_epoch scores dev with the resource meter paused,
and the dev points within an epoch are timed out of it), so an epoch's seconds are training time
only. Every step's time is split into phases (step_timing.PhaseClock).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from sm3repro.record.schema import Phases, StepRow
from sm3repro.run.state import TrainingState
from sm3repro.run.step_timing import phase_clock
from sm3repro.run.tracking import Tracker


@dataclass
class EpochTraining:
    """One epoch's pass over the training set (without dev parsing)."""

    train_loss: float
    train_accuracy: float
    seconds: float
    examples: int
    last_step: int  # the global step the epoch ended at
    phases: Phases | None = None  # None with time_phases=false
    diverged: str | None = None  # why training stopped in this epoch


# Called at a dev point inside an epoch with (global step, training seconds of this epoch so far).
DevPointHook = Callable[[int, float], None]


def dev_point_steps(n_batches: int, per_epoch: int) -> set[int]:
    """The steps of an epoch (1-based) after which dev is scored before its end: ``per_epoch``
    points evenly spaced, the last of them the epoch's end (which train.evaluate_epoch scores)."""
    return {round(k * n_batches / per_epoch) for k in range(1, per_epoch)} - {0, n_batches}


def train_epoch(
    cfg: DictConfig, state: TrainingState, features: torch.Tensor, gold: torch.Tensor,
    epoch: int, tracker: Tracker, dev_point: DevPointHook | None = None,
) -> EpochTraining:  # fmt: skip
    """One shuffled pass of minibatch steps; logs the mean loss every ``log_every`` steps, calls
    ``dev_point`` at the epoch's inner dev points, and stops at the first non-finite loss."""
    model, optimizer, device = state.model, state.optimizer, features.device
    model.train()
    n_examples = len(gold)
    n_batches = math.ceil(n_examples / cfg.batch_size)
    order = torch.randperm(n_examples, generator=state.generator).to(device)
    # Running sums stay on the device: no host sync per step, only at log points.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    window_loss, window_steps = torch.zeros((), dtype=torch.float64, device=device), 0
    diverged = None
    dev_steps = dev_point_steps(n_batches, cfg.dev_evals_per_epoch) if dev_point else set()
    timer = _EpochTimer(cfg.time_phases, device)
    clock = timer.clock  # local: four laps a step
    progress = _progress(n_batches, epoch, cfg.epochs)
    for b in range(n_batches):
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x, y = features[idx], gold[idx]
        clock.lap("rest")
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        clock.lap("forward")
        optimizer.zero_grad()  # set_to_none: backward writes fresh grads, no memset+add
        loss.backward()
        clock.lap("backward")
        optimizer.step()
        clock.lap("optimizer")
        if state.scheduler is not None:
            state.scheduler.step()
        if state.averaged is not None:
            state.averaged.update_parameters(model)
        detached = loss.detach()
        loss_sum += detached * len(y)
        window_loss += detached
        window_steps += 1
        correct += (logits.detach().argmax(1) == y).sum()
        step = (epoch - 1) * n_batches + b + 1
        if window_steps == cfg.log_every or b == n_batches - 1:
            mean_loss = _log_loss(state, tracker, epoch, step, window_loss, window_steps)
            window_steps = 0
            progress.update(cfg.log_every)
            if not math.isfinite(mean_loss):
                diverged = f"non-finite training loss at step {step}"
                break
        if b + 1 in dev_steps:
            timer.exclude(lambda so_far, step=step: dev_point(step, so_far))
    progress.close()
    return EpochTraining(
        train_loss=float(loss_sum) / n_examples, train_accuracy=int(correct) / n_examples,
        seconds=timer.training_s(), examples=n_examples, last_step=step,
        phases=timer.phases(b + 1), diverged=diverged,
    )  # fmt: skip


class _EpochTimer:
    """The epoch's training seconds and phase times, with dev points timed out of both."""

    def __init__(self, time_phases: bool, device: torch.device) -> None:
        self.clock = phase_clock(time_phases, device)
        self._timed = time_phases
        self._start = time.perf_counter()
        self._excluded_s = 0.0

    def exclude(self, work: Callable[[float], None]) -> None:
        """Run ``work(training seconds so far)`` outside the epoch's training time."""
        self.clock.lap("rest")
        paused = time.perf_counter()
        work(paused - self._start - self._excluded_s)
        self._excluded_s += time.perf_counter() - paused
        self.clock.restart()

    def training_s(self) -> float:
        """Training seconds since the epoch began; closes the last phase."""
        self.clock.lap("rest")
        return time.perf_counter() - self._start - self._excluded_s

    def phases(self, steps: int) -> Phases | None:
        if not self._timed:
            return None
        clock = self.clock
        return Phases(steps=steps, wall_s=clock.rounded(clock.wall_s),
                      cpu_s=clock.rounded(clock.cpu_s))  # fmt: skip


def _log_loss(
    state: TrainingState, tracker: Tracker, epoch: int, step: int, window_loss: torch.Tensor,
    window_steps: int,
) -> float:  # fmt: skip
    """The mean loss over the window, recorded and logged; the window's sum is reset."""
    mean_loss = float(window_loss) / window_steps
    state.metrics.append(StepRow(epoch=epoch, step=step, loss=mean_loss))
    tracker.log_step(step, {"train/loss": mean_loss})
    window_loss.zero_()
    return mean_loss


def _progress(total: int, epoch: int, epochs: int):
    """A per-epoch progress bar, silent when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                disable=not sys.stderr.isatty(), mininterval=1.0)  # fmt: skip
