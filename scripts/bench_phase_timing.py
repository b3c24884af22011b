"""What phase timing costs: training epochs with ``time_phases`` on and off, interleaved A/B.

    python scripts/bench_phase_timing.py [--pairs 120] [--sentences 300] [--batch-size 64]
        [--optimizer sm3_ii]

One process, one model and optimizer (built as ``sm3repro.run.train`` builds them), the training
loop itself (``sm3repro.run.epoch.train_epoch``) over a slice of EWT train: each pair runs one epoch
with the phase clock and one without, in alternating order (A B, B A, ...) so drifts in machine
speed hit both arms alike. Epochs are short (300 sentences: ~150 steps, under a second) and
pairs many, because this host's speed jumps by 25-30% from one second to the next (seen with
the host calibration): long epochs would put such jumps between the two arms of a pair. Batch 64 with SM3-II is the shortest step of the study (~2 ms), where
a fixed cost per step weighs most. Printed: every pair, the mean ratio with a 95% t interval on
the log ratios (scipy.stats), and the clock reads' own cost per step measured apart.

Target (issue 24): the overhead of timing is <= 1% of the epoch: the A/B's mean ratio <= 1.01,
and the clock reads alone <= 1% of a step.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sm3repro.run import train  # noqa: E402
from sm3repro.run.epoch import train_epoch  # noqa: E402
from sm3repro.run.step_timing import PhaseClock  # noqa: E402
from sm3repro.run.tracking import Tracker  # noqa: E402

TARGET = 1.01


def clock_cost_us(reps: int = 200_000) -> float:
    """Microseconds of the four laps a step takes, timed on their own."""
    clock = PhaseClock()
    start = time.perf_counter()
    for _ in range(reps):
        clock.lap("rest")
        clock.lap("forward")
        clock.lap("backward")
        clock.lap("optimizer")
    return 1e6 * (time.perf_counter() - start) / reps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=120)
    p.add_argument("--sentences", type=int, default=300, help="EWT train sentences per epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="sm3_ii")
    a = p.parse_args(argv)
    overrides = [
        f"optimizer={a.optimizer}", f"batch_size={a.batch_size}", "logger=none",
        f"data.max_train_sentences={a.sentences}", "data.max_eval_sentences=10",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=train.CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    train.tune_malloc()
    data = train.load_data_once(cfg)
    state, impl = train.build(cfg, data, "bench-phase-timing")
    features = torch.from_numpy(data.features)
    gold = torch.from_numpy(data.gold.astype(np.int64))
    steps = math.ceil(len(gold) / cfg.batch_size)
    print(f"{impl}, batch {cfg.batch_size}, {steps} steps per epoch, "
          f"{torch.get_num_threads()} threads")  # fmt: skip

    def epoch_s(timed: bool, epoch: int) -> float:
        cfg.time_phases = timed
        return train_epoch(cfg, state, features, gold, epoch, Tracker()).seconds

    epoch_s(True, 1)  # warm-up: allocator, caches, the optimizer's state
    ratios = []
    for pair in range(a.pairs):
        order = (True, False) if pair % 2 == 0 else (False, True)
        seconds = {timed: epoch_s(timed, 2 + 2 * pair + k) for k, timed in enumerate(order)}
        ratios.append(seconds[True] / seconds[False])
        if pair % 10 == 9:
            print(f"pairs {pair - 8}-{pair + 1}: ratios "
                  + " ".join(f"{r:.3f}" for r in ratios[-10:]))  # fmt: skip
    logs = np.log(ratios)
    low, high = stats.t.interval(0.95, len(logs) - 1, loc=logs.mean(), scale=stats.sem(logs))
    mean = math.exp(logs.mean())
    laps = clock_cost_us()
    step_ms = 1000 * epoch_s(False, 2 * a.pairs + 2) / steps
    print(f"clock reads: {laps:.2f} us per step = {100 * laps / 1000 / step_ms:.3f}% of a "
          f"{step_ms:.3f} ms step")  # fmt: skip
    # Both must hold: the A/B (everything timing changes, but noisy on this host) and the clock
    # reads alone (exact, but blind to side effects such as caches).
    ok = mean <= TARGET and laps / 1000 / step_ms <= TARGET - 1
    print(f"phase timing overhead: mean ratio {mean:.4f} (95% CI {math.exp(low):.4f}-"
          f"{math.exp(high):.4f}, median {float(np.median(ratios)):.4f}, n = {len(ratios)} pairs) "
          f"target <= {TARGET}: {'met' if ok else 'NOT met'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
