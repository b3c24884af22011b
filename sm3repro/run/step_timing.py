"""Timing inside the training loop: where a step's time goes, and how fast the host is.

Whole-run wall clock mixes the optimizer with forward and backward (the same work for every
optimizer) and with the host's speed that day. Two measurements separate them:

- :class:`PhaseClock` splits every step's wall and CPU seconds into forward (the model and the
  loss), backward (zeroing and ``loss.backward``), optimizer (``optimizer.step``) and the rest
  (batch indexing, lr schedule, weight average, running sums, logging). On the CPU every torch op
  has finished when it returns, so reading the clocks between phases is exact; a CUDA run
  synchronises at each boundary. Four laps a step read ``perf_counter`` and ``process_time``
  (CPU time of every thread of the process) eight times: microseconds against a step of 2-13 ms
  (``scripts/bench_phase_timing.py`` measures the overhead in an interleaved A/B).
- :func:`calibrate_host` times a fixed workload, the parser's own forward and backward on a
  fixed batch with no optimizer, at the start and end of every run segment: a host-speed figure
  recorded beside the run, so runtimes from different hosts or hours can be compared after
  normalising by it, or not compared at all.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sm3repro.record.schema import CalibrationRow, HostSpeed, Phases, StepCost

PHASES = ("forward", "backward", "optimizer", "rest")
# The calibration workload: a fixed slice of the training set through a freshly seeded model.
CALIBRATION_BATCH = 256
CALIBRATION_WARMUP = 10
CALIBRATION_REPS = 150
CALIBRATION_SEED = 1234


class PhaseClock:
    """Wall and CPU seconds per phase. ``lap(phase)`` charges the time since the previous lap
    (or ``restart``) to ``phase``; ``restart`` drops the time since the last lap, e.g. a dev
    evaluation in the middle of an epoch."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.wall_s = dict.fromkeys(PHASES, 0.0)
        self.cpu_s = dict.fromkeys(PHASES, 0.0)
        self._sync = sync
        self._wall = self._cpu = 0.0
        self.restart()

    def restart(self) -> None:
        if self._sync is not None:
            self._sync()
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, phase: str) -> None:
        if self._sync is not None:
            self._sync()
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall_s[phase] += wall - self._wall
        self.cpu_s[phase] += cpu - self._cpu
        self._wall, self._cpu = wall, cpu

    @staticmethod
    def rounded(seconds: dict[str, float]) -> dict[str, float]:
        """To 10 microseconds, as the records keep them."""
        return {phase: round(value, 5) for phase, value in seconds.items()}


class NoPhaseClock(PhaseClock):
    """Timing switched off (``time_phases=false``): the A/B bench's baseline."""

    def restart(self) -> None:
        pass

    def lap(self, phase: str) -> None:
        pass


def phase_clock(enabled: bool, device: torch.device) -> PhaseClock:
    if not enabled:
        return NoPhaseClock()
    return PhaseClock(torch.cuda.synchronize if device.type == "cuda" else None)


def calibrate_host(
    make_model: Callable[[], nn.Module], features: torch.Tensor, gold: torch.Tensor
) -> float:
    """Median milliseconds of one forward+backward of a freshly seeded model on the first
    ``CALIBRATION_BATCH`` training examples (no optimizer). The run's own RNG streams are
    untouched: the model is built inside a forked RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CALIBRATION_SEED)
        model = make_model().to(features.device)
    model.train()
    x, y = features[:CALIBRATION_BATCH], gold[:CALIBRATION_BATCH]
    sync = torch.cuda.synchronize if features.device.type == "cuda" else (lambda: None)
    times = []
    with torch.random.fork_rng(devices=[]):  # dropout masks, if any, draw from a fork too
        for rep in range(CALIBRATION_WARMUP + CALIBRATION_REPS):
            start = time.perf_counter()
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            sync()
            if rep >= CALIBRATION_WARMUP:
                times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 4)


def step_cost(phases: list[Phases], examples: int) -> StepCost | None:
    """The optimizer step's cost over a run's epochs (None when no epoch was phase-timed)."""
    if not phases:
        return None
    total = sum(phases[1:], phases[0])
    wall, steps = total.wall_s, total.steps
    forward_backward = wall["forward"] + wall["backward"]
    return StepCost(
        phases=Phases(
            steps=steps, wall_s=PhaseClock.rounded(wall), cpu_s=PhaseClock.rounded(total.cpu_s)
        ),
        optimizer_ms_per_step=round(1000 * wall["optimizer"] / steps, 5),
        forward_backward_ms_per_step=round(1000 * forward_backward / steps, 5),
        optimizer_cpu_s_per_1k_examples=round(1000 * total.cpu_s["optimizer"] / examples, 6),
        optimizer_share=round(wall["optimizer"] / (forward_backward + wall["optimizer"]), 5),
        optimizer_overhead=round(wall["optimizer"] / forward_backward, 5),
        max_saving_from_optimizer=round(wall["optimizer"] / sum(wall.values()), 5),
    )


def host_speed(calibrations: list[CalibrationRow]) -> HostSpeed | None:
    """The run's calibrations in order, their median and spread (None before calibration)."""
    ms = [row.ms for row in calibrations]
    if not ms:
        return None
    return HostSpeed(
        calibration_ms=ms,
        median_ms=round(statistics.median(ms), 4),
        spread=round(max(ms) / min(ms), 4),
    )
