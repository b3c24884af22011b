"""The shape of a run's record: ``summary.json`` and the rows of ``metrics.jsonl``.

One typed schema that ``train.py`` writes, the report reads and the test fixtures build from.
``to_dict`` gives the JSON keys the records have always had (a section that a run has not reached
yet, such as ``final`` while it is running, is left out rather than written as null), and
``from_dict`` reads a committed record back.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar


class Status(enum.StrEnum):
    """A run's state in ``summary.json``; a str, so it compares and serialises as its value."""

    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"


FINISHED = (Status.COMPLETED, Status.DIVERGED)  # never trained again

# The dev scores ``RunSummary.dev_metric`` reads: "<model>.dev.<score>" with model "final" (the
# last epoch's) or "best_dev" (the epoch with the highest dev LAS micro).
DEV_METRICS = tuple(
    f"{model}.dev.{score}"
    for model in ("final", "best_dev")
    for score in ("las_macro", "las_micro", "uas_macro", "uas_micro")
)


def _absent_if_none() -> Any:
    """A field left out of the JSON while it is None (a section the run has not reached)."""
    return field(default=None, metadata={"absent_if_none": True})


_Record = TypeVar("_Record", bound="_Serialised")


class _Serialised:
    """``to_dict``/``from_dict`` for the dataclasses below, keys in field order."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.metadata.get("absent_if_none"):
                continue
            if isinstance(value, _Serialised):
                value = value.to_dict()
            elif isinstance(value, enum.Enum):
                value = value.value
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[_Record], data: dict[str, Any]) -> _Record:
        """Rebuild from ``to_dict``'s output; a missing required key raises TypeError."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
        values = {name: _typed(hints[name], value) for name, value in data.items()}
        return cls(**values)


def _typed(hint: Any, value: Any) -> Any:
    """``value`` as ``hint`` says: nested records and the Status enum are rebuilt."""
    if value is None:
        return None
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if isinstance(option, type) and issubclass(option, _Serialised):
            return option.from_dict(value)
        if option is Status:
            return Status(value)
    return value


@dataclass(kw_only=True)
class Scores(_Serialised):
    """UAS/LAS of one split, token-averaged (micro) and sentence-averaged (macro)."""

    uas_micro: float
    las_micro: float
    uas_macro: float
    las_macro: float
    tokens: int | None = _absent_if_none()  # absent from the final dev scores (an epoch row's)
    sentences: int | None = _absent_if_none()


@dataclass(kw_only=True)
class FinalScores(_Serialised):
    """The last epoch's model: its training loss and accuracy, dev and test scores."""

    train_loss: float
    train_accuracy: float
    dev: Scores
    test: Scores


@dataclass(kw_only=True)
class BestDev(_Serialised):
    """The epoch with the highest dev LAS (micro), and that model's test scores."""

    epoch: int
    dev: Scores
    test: Scores


@dataclass(kw_only=True)
class Phases(_Serialised):
    """Training-loop seconds per phase (step_timing.PHASES: forward, backward, optimizer, rest),
    wall and CPU (every thread of the process), over ``steps`` steps."""

    steps: int
    wall_s: dict[str, float]
    cpu_s: dict[str, float]

    def __add__(self, other: Phases) -> Phases:
        return Phases(
            steps=self.steps + other.steps,
            wall_s={k: self.wall_s[k] + other.wall_s[k] for k in self.wall_s},
            cpu_s={k: self.cpu_s[k] + other.cpu_s[k] for k in self.cpu_s},
        )


@dataclass(kw_only=True)
class StepCost(_Serialised):
    """What the optimizer step costs within the run (from the epochs' phases), and a figure that
    does not depend on the host's speed: forward and backward are the same work for every
    optimizer, so the step's time relative to them compares optimizers across hosts."""

    phases: Phases  # summed over every epoch of every segment
    optimizer_ms_per_step: float
    forward_backward_ms_per_step: float
    optimizer_cpu_s_per_1k_examples: float
    optimizer_share: float  # optimizer / (forward + backward + optimizer), wall
    optimizer_overhead: float  # optimizer / (forward + backward), wall
    # The largest saving in training time a faster optimizer step could bring: the step's share
    # of all training-loop wall time (an optimizer step of zero cost).
    max_saving_from_optimizer: float


@dataclass(kw_only=True)
class HostSpeed(_Serialised):
    """The host's speed on step_timing.calibrate_host's fixed workload (ms per forward+backward),
    at the start and end of every segment of the run (a resumed run has several)."""

    calibration_ms: list[float]  # start, end of segment 1, then of segment 2, ...
    median_ms: float
    spread: float  # max / min of the calibrations: > ~1.1 means the host changed during the run


@dataclass(kw_only=True)
class Resources(_Serialised):
    """What the training loop cost (data loading, featurizing and dev parsing timed apart).

    The first block comes from ``ResourceMeter.stop()``; over resumed segments ``runtime_s``,
    ``cpu_s``, ``cpu_percent`` and the contention figures cover every segment, the other meter
    values the last one.
    """

    runtime_s: float
    runtime_min: float
    cpu_s: float
    cpu_percent: float | None
    cpu_percent_peak: float | None
    system_cpu_percent_mean: float | None
    peak_rss_mb: float
    peak_rss_is_process_lifetime: bool
    sampled_rss_peak_mb: float
    paused_s: float
    usable_cores: int
    samples: int
    optimizer_state_bytes: int
    n_parameters: int
    torch_threads: int
    data_load_s: float
    featurize_s: float
    epoch_time_s_mean: float | None = _absent_if_none()  # absent when no epoch finished
    examples_per_s: float | None = _absent_if_none()
    # Recorded since the claims arms (absent in earlier records), over every segment:
    # CPU time of the training loop per 1,000 training examples, and whether other processes
    # (others_cpu_percent) or the hypervisor (steal_percent) took the usable cores' time
    # (resources.contention's rule).
    cpu_s_per_1k_examples: float | None = _absent_if_none()
    system_busy_s: float | None = _absent_if_none()
    steal_s: float | None = _absent_if_none()
    others_cpu_percent: float | None = _absent_if_none()
    steal_percent: float | None = _absent_if_none()
    contended: bool | None = _absent_if_none()


@dataclass(kw_only=True)
class RunSummary(_Serialised):
    """``summary.json``: written when a run starts, after every epoch, and when it ends."""

    run_id: str
    status: Status
    optimizer: str
    optimizer_impl: str
    batch_size: int
    seed: int
    epochs: int
    epochs_completed: int = 0
    experiment: str
    group: str
    data: dict[str, Any]  # dataset.load_data's stats: sizes, vocabularies, checksums, timings
    provenance: dict[str, Any]  # provenance.provenance() plus started_at and finished_at
    reason: str | None = None  # why a run diverged
    resumed_from_epoch: int | None = _absent_if_none()
    final: FinalScores | None = _absent_if_none()  # completed runs only
    best_dev: BestDev | None = _absent_if_none()  # completed runs only
    resources: Resources | None = _absent_if_none()  # finished runs only
    record_files: dict[str, str] | None = _absent_if_none()  # records.RunDir.write_summary
    # Recorded since the timed arm (issue 24): the optimizer step's cost, the host's speed.
    step_cost: StepCost | None = _absent_if_none()
    host_speed: HostSpeed | None = _absent_if_none()

    def dev_metric(self, name: str) -> float | None:
        """The dev score ``name`` (one of DEV_METRICS); None when the run did not complete."""
        if name not in DEV_METRICS:
            raise ValueError(f"{name!r} is not one of {', '.join(DEV_METRICS)}")
        model, split, score = name.split(".")
        scores = getattr(self, model)
        return None if scores is None else getattr(getattr(scores, split), score)

    def flat(self) -> dict[str, Any]:
        """The scalars worth a W&B summary: ids, then ``final/test/las_macro``-style keys."""
        summary = self.to_dict()
        keep = {
            k: summary[k] for k in ("status", "optimizer", "optimizer_impl", "batch_size", "seed")
        }
        for section in ("final", "best_dev", "resources"):
            for k, v in (summary.get(section) or {}).items():
                if isinstance(v, dict):
                    keep.update({f"{section}/{k}/{kk}": vv for kk, vv in v.items()})
                elif not isinstance(v, list):
                    keep[f"{section}/{k}"] = v
        return keep


@dataclass(kw_only=True)
class StepRow(_Serialised):
    """A ``metrics.jsonl`` row every ``log_every`` steps: the mean loss over those steps."""

    kind: str = "step"
    epoch: int
    step: int
    loss: float


@dataclass(kw_only=True)
class EpochRow(_Serialised):
    """A ``metrics.jsonl`` row per epoch: training loss/accuracy, dev scores, cost."""

    kind: str = "epoch"
    epoch: int
    train_loss: float
    train_accuracy: float
    dev_uas_micro: float
    dev_las_micro: float
    dev_uas_macro: float
    dev_las_macro: float
    epoch_time_s: float
    examples_per_s: float
    cpu_percent: float | None
    system_cpu_percent: float | None
    rss_mb: float | None
    # Other processes' and the hypervisor's share of the usable cores in this epoch's training
    # (absent in records from before contention was metered).
    others_cpu_percent: float | None = _absent_if_none()
    steal_percent: float | None = _absent_if_none()
    contended: bool | None = _absent_if_none()
    phases: Phases | None = _absent_if_none()  # absent before phase timing, or with it off

    def dev(self) -> dict[str, float]:
        """The dev scores without their ``dev_`` prefix."""
        return {k[4:]: v for k, v in self.to_dict().items() if k.startswith("dev_")}

    def loggable(self) -> dict[str, Any]:
        """Flat scalars for a tracker: the row's values, phases as ``phases/wall_s/forward``."""
        out = {k: v for k, v in self.to_dict().items() if k not in ("kind", "epoch", "phases")}
        if self.phases is not None:
            for clock in ("wall_s", "cpu_s"):
                out.update(
                    {f"phases/{clock}/{k}": v for k, v in getattr(self.phases, clock).items()}
                )
        return out


@dataclass(kw_only=True)
class DevPoint(_Serialised):
    """A ``metrics.jsonl`` row per dev evaluation (``dev_evals_per_epoch`` per epoch, the last at
    the epoch's end): the dev scores against the training seconds so far (dev parsing excluded),
    the time axis of time-to-target."""

    kind: str = "dev"
    epoch: int
    step: int  # global step, counted from the run's first
    train_s: float  # training-loop seconds since the run's first step, over every segment
    dev_uas_micro: float
    dev_las_micro: float
    dev_uas_macro: float
    dev_las_macro: float

    @classmethod
    def of(cls, epoch: int, step: int, train_s: float, dev: Scores) -> DevPoint:
        return cls(
            epoch=epoch, step=step, train_s=round(train_s, 3), dev_uas_micro=dev.uas_micro,
            dev_las_micro=dev.las_micro, dev_uas_macro=dev.uas_macro, dev_las_macro=dev.las_macro,
        )  # fmt: skip


@dataclass(kw_only=True)
class CalibrationRow(_Serialised):
    """A ``metrics.jsonl`` row at the start and end of every segment: the host's speed."""

    kind: str = "calibration"
    segment: int  # 1 for the first sitting, 2 after the first resume, ...
    when: str  # "start" or "end"
    ms: float  # step_timing.calibrate_host's median ms per forward+backward
    at: str  # UTC time


MetricsRow = StepRow | EpochRow | DevPoint | CalibrationRow
_ROW_KINDS: dict[str, type[_Serialised]] = {
    "step": StepRow, "epoch": EpochRow, "dev": DevPoint, "calibration": CalibrationRow,
}  # fmt: skip


def metrics_row(data: dict[str, Any]) -> MetricsRow:
    """A parsed ``metrics.jsonl`` line as its typed row (a line without a kind is a step row)."""
    kind = data.get("kind", "step")
    if kind not in _ROW_KINDS:
        raise TypeError(f"unknown metrics row kind {kind!r}")
    return _ROW_KINDS[kind].from_dict(data)  # type: ignore[return-value]
