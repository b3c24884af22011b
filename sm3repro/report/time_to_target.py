"""Time to target: training seconds until dev macro LAS first reaches a target (MLCommons
AlgoPerf's "trains faster": evaluation time excluded, a miss counts as infinite).

Targets are fixed from the baselines before SM3 is looked at: per protocol and batch size, the
baseline (SGD, Adagrad, Adam) with the highest median over seeds of its runs' best dev macro LAS
sets ``best``, and the ladder is ``fraction x best`` for each of ``FRACTIONS``. A run's dev curve
is its dev points (records since issue 24: ``dev_evals_per_epoch`` per epoch, on the training
seconds so far) or, in older records, its epoch rows (epoch resolution: cumulative epoch
seconds). Only runs the timing verdicts trust are timed: uncontended, on every usable core, and
trained in one sitting (a resumed run's seconds span two hosts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sm3repro.arms.protocols import PROTOCOLS as PROTOCOL_ENTRIES
from sm3repro.optim import catalog
from sm3repro.record.implementation import ran_sparse_rows, sm3_ran_eager
from sm3repro.record.schema import DevPoint, EpochRow, MetricsRow, RunSummary
from sm3repro.report.intervals import ALPHA, Ratio, ratio_interval, spent_alpha
from sm3repro.report.results import Results

FRACTIONS = (0.90, 0.95, 0.975, 0.99)
BASELINES = ("sgd", "adagrad", "adam")
REFERENCE = "adam"  # ratios are to Adam's time, as the study's claim 3 reads
# protocol label -> experiment names whose records it reads (arms/protocols.py): the study's
# fastest_exact runs (sparse rows) belong to its protocol, though recorded days after its dense
# runs (their comparisons are unpaired, across sittings); the timed arm is its own protocol,
# its runs interleaved by seed block, so its comparisons pair by seed.
PROTOCOLS = {p.speed_label: p.experiments for p in PROTOCOL_ENTRIES}
PAIRED = {p.speed_label for p in PROTOCOL_ENTRIES if p.paired}
SPARSE = " (sparse rows)"


@dataclass(frozen=True)
class Curves:
    """Every trusted run's dev curve (one row per point) and its whole-run timing figures."""

    points: pd.DataFrame  # protocol, variant, batch_size, seed, run_id, resolution, train_s, las
    runs: pd.DataFrame  # protocol, variant, batch_size, seed, run_id, and RUN_FIGURES
    left_out: int  # completed runs of the protocols not timed (contended, fewer threads, resumed)


# Whole-run figures the speed and CPU tiers read: runtime and CPU cost at fixed epochs, and the
# optimizer step's own cost (runs with phase timing only; NaN before it).
RUN_FIGURES = (
    "runtime_s",
    "cpu_s",
    "cpu_s_per_1k",
    "optimizer_ms_per_step",
    "optimizer_cpu_s_per_1k",
    "optimizer_overhead",
    "max_saving_from_optimizer",
    "host_ms",  # the run's median host calibration (ms)
    "eager",  # an SM3 run on the eager path (record.implementation.sm3_ran_eager)
)


def _figures(summary: RunSummary) -> tuple[float, ...]:
    r, cost, nan = summary.resources, summary.step_cost, float("nan")
    assert r is not None
    step = (
        (cost.optimizer_ms_per_step, cost.optimizer_cpu_s_per_1k_examples,
         cost.optimizer_overhead, cost.max_saving_from_optimizer)
        if cost is not None else (nan, nan, nan, nan)
    )  # fmt: skip
    per_1k = r.cpu_s_per_1k_examples
    if per_1k is None:  # older records: the training loop's CPU seconds over the examples
        per_1k = 1000 * r.cpu_s / (summary.data["train_examples"] * summary.epochs_completed)
    host = summary.host_speed.median_ms if summary.host_speed is not None else nan
    return (r.runtime_s, r.cpu_s, per_1k, *step, host, sm3_ran_eager(summary.optimizer_impl))


def _variant(summary: RunSummary) -> str:
    return summary.optimizer + (SPARSE if ran_sparse_rows(summary.optimizer_impl) else "")


def _trusted(summary: RunSummary) -> bool:
    r = summary.resources
    return (
        r is not None and not r.contended and r.torch_threads >= r.usable_cores
        and summary.resumed_from_epoch is None
    )  # fmt: skip


def _points(rows: Sequence[MetricsRow]) -> tuple[str, list[tuple[float, float]]]:
    dev = [(r.train_s, r.dev_las_macro) for r in rows if isinstance(r, DevPoint)]
    if dev:
        return "within epochs", dev
    epochs = [r for r in rows if isinstance(r, EpochRow)]
    seconds = np.cumsum([r.epoch_time_s for r in epochs])
    return "epoch", [(float(s), r.dev_las_macro) for s, r in zip(seconds, epochs, strict=True)]


def load_curves(results: Results) -> Curves:
    """The dev curves of the protocols' completed, trusted runs among ``results``' records."""
    protocol_of = {e: p for p, experiments in PROTOCOLS.items() for e in experiments}
    rows, runs, left_out = [], [], 0
    for record in results.completed():
        summary = record.summary
        protocol = protocol_of.get(summary.experiment) if summary is not None else None
        if summary is None or protocol is None:
            continue
        if not _trusted(summary):
            left_out += 1
            continue
        try:  # unreadable metrics are the run table's to note (results.py); here it is skipped
            resolution, points = _points(results.metrics(record.run_id))
            figures = _figures(summary)
        except (OSError, ValueError, TypeError, KeyError, AttributeError, ZeroDivisionError):
            continue
        key = (protocol, _variant(summary), summary.batch_size, summary.seed, summary.run_id)
        rows += [(*key, resolution, s, las) for s, las in points]
        runs.append((*key, *figures))
    keys = ["protocol", "variant", "batch_size", "seed", "run_id"]
    points_df = pd.DataFrame(rows, columns=[*keys, "resolution", "train_s", "dev_las_macro"])
    return Curves(points_df, pd.DataFrame(runs, columns=[*keys, *RUN_FIGURES]), left_out)


def targets(points: pd.DataFrame, fractions: tuple[float, ...] = FRACTIONS) -> pd.DataFrame:
    """Per protocol and batch size: the best baseline, its median best dev LAS, the ladder."""
    best = points.groupby(["protocol", "batch_size", "variant", "run_id"])["dev_las_macro"].max()
    median = best.groupby(["protocol", "batch_size", "variant"]).median().reset_index()
    median = median[median["variant"].isin(BASELINES)]
    top = median.loc[median.groupby(["protocol", "batch_size"])["dev_las_macro"].idxmax()]
    rows = [
        (p, b, v, las, f, f * las)
        for p, b, v, las in top[["protocol", "batch_size", "variant", "dev_las_macro"]].itertuples(
            index=False
        )
        for f in fractions
    ]
    return pd.DataFrame(
        rows, columns=["protocol", "batch_size", "baseline", "baseline_best", "fraction", "target"]
    )


def times_to_target(points: pd.DataFrame, ladder: pd.DataFrame) -> pd.DataFrame:
    """One row per run and rung: the first training second at which dev LAS >= the target
    (inf if never)."""
    rows = []
    for (protocol, batch), runs in points.groupby(["protocol", "batch_size"]):
        rungs = ladder[(ladder["protocol"] == protocol) & (ladder["batch_size"] == batch)]
        for (variant, seed, run_id), curve in runs.groupby(["variant", "seed", "run_id"]):
            curve = curve.sort_values("train_s")
            for fraction, target in rungs[["fraction", "target"]].itertuples(index=False):
                reached = curve.loc[curve["dev_las_macro"] >= target, "train_s"]
                seconds = float(reached.iloc[0]) if len(reached) else math.inf
                rows.append((protocol, batch, variant, seed, run_id, fraction, target, seconds))
    return pd.DataFrame(rows, columns=["protocol", "batch_size", "variant", "seed", "run_id",
                                       "fraction", "target", "seconds"])  # fmt: skip


def compare_to_reference(times: pd.DataFrame) -> pd.DataFrame:
    """Per protocol, batch, rung and variant: seeds, misses, median seconds, and the ratio to
    Adam's time with its 95% interval and verdict (paired by seed in the timed arm)."""
    rows = []
    for (protocol, batch, fraction), cell in times.groupby(["protocol", "batch_size", "fraction"]):
        reference = cell[cell["variant"] == REFERENCE].set_index("seed")["seconds"]
        for variant, runs in cell.groupby("variant", sort=False):
            own = runs.set_index("seed")["seconds"]
            ratio = None
            if variant != REFERENCE and len(reference):
                paired = protocol in PAIRED
                seeds = own.index.intersection(reference.index) if paired else None
                a, b = (own[seeds], reference[seeds]) if paired else (own, reference)
                alpha = spent_alpha(len(a)) if paired else ALPHA  # see speed_claims
                ratio = ratio_interval(a.to_list(), b.to_list(), paired=paired, alpha=alpha)
            rows.append(_row(protocol, batch, fraction, variant, own, ratio))
    return pd.DataFrame(rows)


def _row(protocol: str, batch: int, fraction: float, variant: str, own: pd.Series,
         ratio: Ratio | None) -> dict:  # fmt: skip
    finite = own[np.isfinite(own)]
    return {
        "protocol": protocol, "batch_size": batch, "fraction": fraction,
        "optimizer": label(variant), "n": len(own), "missed": int((~np.isfinite(own)).sum()),
        "median_s": float(own.median()) if len(finite) * 2 > len(own) else math.inf,
        "ratio_to_adam": ratio.text() if ratio else "",
        "verdict_vs_adam": ratio.verdict if ratio else "",
    }  # fmt: skip


def label(variant: str) -> str:
    """The optimizer's label, with its sparse-rows implementation named."""
    name, sparse = (variant[: -len(SPARSE)], SPARSE) if variant.endswith(SPARSE) else (variant, "")
    return catalog.label(name) + sparse
