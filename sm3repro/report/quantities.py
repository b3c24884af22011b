"""Every per-run quantity the report reads, each one entry: where the typed record holds it, how
many decimals it is printed with, how a claim's evidence names it, and whether it measures the
machine (a timing: contended runs are left out of its seed means).

The runs table (results.py) has one column per entry, the seed statistics one ``_mean``/``_std``
pair, and a claim's check names an entry, so its decimals and its timing flag come with it. A new
measured quantity in a run record is its field in ``record/schema.py``, the code that records it,
and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sm3repro.record.schema import RunSummary


@dataclass(frozen=True)
class Quantity:
    name: str  # the column in the runs table; ``<name>_mean``/``_std`` in the seed statistics
    words: str  # how a claim's evidence line names it
    decimals: int  # tables and evidence print it with these
    # How a run's value is read from its record; None for a quantity derived from the run's
    # curves (the report computes it from metrics.jsonl).
    read: Callable[[RunSummary], Any] | None = None
    timing: bool = False  # measures the machine as much as the optimizer (see timing.py)


def _final(field: str) -> Callable[[RunSummary], Any]:
    return lambda s: None if s.final is None else getattr(s.final, field)


def _test(score: str) -> Callable[[RunSummary], Any]:
    return lambda s: None if s.final is None else getattr(s.final.test, score)


def _resources(field: str) -> Callable[[RunSummary], Any]:
    return lambda s: None if s.resources is None else getattr(s.resources, field)


QUANTITIES: tuple[Quantity, ...] = (
    # the last epoch's model (train_loss falls back to the last epoch row's)
    Quantity("train_loss", "final train loss", 4, _final("train_loss")),
    Quantity("train_accuracy", "final train accuracy", 4, _final("train_accuracy")),
    Quantity("test_las_macro", "test LAS macro", 3, _test("las_macro")),
    Quantity("test_uas_macro", "test UAS macro", 3, _test("uas_macro")),
    Quantity("test_las_micro", "test LAS micro", 3, _test("las_micro")),
    Quantity("test_uas_micro", "test UAS micro", 3, _test("uas_micro")),
    # what the training loop cost (cpu_s_per_1k of older records: timing.py derives it)
    Quantity("cpu_percent", "CPU%", 1, _resources("cpu_percent"), timing=True),
    Quantity(
        "cpu_s_per_1k", "CPU-s per 1k examples", 4, _resources("cpu_s_per_1k_examples"), timing=True
    ),
    Quantity("runtime_min", "runtime min", 2, _resources("runtime_min"), timing=True),
    Quantity("runtime_s", "runtime s", 1, _resources("runtime_s"), timing=True),
    Quantity("peak_rss_mb", "peak RSS MB", 1, _resources("peak_rss_mb")),
    Quantity(
        "optimizer_state_bytes", "optimizer state bytes", 0, _resources("optimizer_state_bytes")
    ),
    Quantity("n_parameters", "parameters", 0, _resources("n_parameters")),
    Quantity("examples_per_s", "examples per s", 0, _resources("examples_per_s"), timing=True),
    Quantity("epoch_time_s", "epoch time s", 2, _resources("epoch_time_s_mean"), timing=True),
    # from the run's curves: the epoch-1 loss (claim 1) and the loss averaged over all epochs,
    # a stand-in for "converges more slowly" (claim 2)
    Quantity("train_loss_epoch1", "epoch-1 train loss", 4),
    Quantity("train_loss_mean", "train loss averaged over epochs", 4),
)
QUANTITY = MappingProxyType({q.name: q for q in QUANTITIES})
VALUES = [q.name for q in QUANTITIES]  # the columns seed statistics are taken of
TIMING_COLUMNS = [q.name for q in QUANTITIES if q.timing]
# Decimals per column prefix, for tables (tables._round) and evidence: every quantity's, and
# the ratios and percentages the tables derive from them.
DECIMALS = MappingProxyType({**{q.name: q.decimals for q in QUANTITIES}, "ratio": 3, "pct": 2})
