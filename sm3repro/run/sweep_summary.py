"""What a sweep did with its runs, printed when it ends: how many it trained and how many it
skipped because their records were already finished (a fresh clone's ``make reproduce``
trains none of the committed runs and says so).

A Hydra callback, wired in ``conf/config.yaml``. Jobs may run in other processes (joblib,
SLURM), so each job appends its outcome to ``outcomes.jsonl`` in the sweep folder and the
summary is read back from there. Hydra does not call ``on_multirun_end`` when a job raised;
the job's error is printed instead.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

OUTCOMES_FILE = "outcomes.jsonl"
# The order and wording of the summary line.
OUTCOMES = {
    "trained": "trained",
    "skipped": "skipped (already finished)",
    "locked": "left to another sweep (locked)",
    "failed": "failed",
}

_current: dict[str, str] | None = None  # this process's job: set by train, read on job end


def note(run_id: str, outcome: str) -> None:
    """Record what the current job did with its run (one of :data:`OUTCOMES`)."""
    global _current
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    _current = {"run_id": run_id, "outcome": outcome}


def summary_line(outcomes: list[str]) -> str:
    """``sm3repro: sweep of 30 runs: 0 trained, 30 skipped (already finished)``; locked and
    failed runs are named only when there are some."""
    counts = Counter(outcomes)
    shown = [k for k in OUTCOMES if counts[k] or k in ("trained", "skipped")]
    return f"sm3repro: sweep of {len(outcomes)} runs: " + ", ".join(
        f"{counts[k]} {OUTCOMES[k]}" for k in shown
    )


class SweepSummary(Callback):
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _current
        _current = None

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        entry = _current
        if entry is None or job_return.status == JobStatus.FAILED:
            entry = {"run_id": (entry or {}).get("run_id", "?"), "outcome": "failed"}
        line = json.dumps({"job": config.hydra.job.num, **entry}) + "\n"
        # One short append per job: atomic with O_APPEND, so parallel jobs do not interleave.
        with open(Path(config.hydra.sweep.dir) / OUTCOMES_FILE, "a", encoding="utf-8") as fh:
            fh.write(line)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(config.hydra.sweep.dir) / OUTCOMES_FILE
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        print(summary_line([json.loads(line)["outcome"] for line in lines]), flush=True)
