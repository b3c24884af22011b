"""One run's folder: its lock, its record files (written atomically) and their checks."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from sm3repro.io import TMP_SUFFIX, atomic_write_json, atomic_write_text, sha256_file
from sm3repro.record.schema import FINISHED, MetricsRow, RunSummary

# -- one run's folder --------------------------------------------------------------------
# Files a finished record vouches for: their digests go into the final summary, so a
# truncated, missing or edited file is caught before the run is trusted as finished.
RECORD_FILES = ("config.yaml", "metrics.jsonl", "predictions.conllu")
REQUIRED_FILES = ("config.yaml", "metrics.jsonl")  # every record has these, diverged or not
# Written by a run but not committed (.gitignore): a clone lacks them, and a rerun of the same
# config writes them again, so their absence or change never makes a finished record "damaged".
RECREATABLE_FILES = ("predictions.conllu",)


def _probe_writable(folder: Path) -> None:
    """Make ``folder`` and write, sync and remove a file in it; OSError naming it if that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A private probe name: two sweeps probing the same folder must not race on one file.
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"ok\n")
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            Path(probe).unlink(missing_ok=True)
    except OSError as err:
        raise OSError(f"results folder {folder} is not writable: {err.strerror or err}") from None


class RunLocked(RuntimeError):
    """Another process is training this run right now."""


class RunDir:
    """``results/runs/<run_id>/``: config, metrics, summary, predictions, checkpoints, lock."""

    def __init__(self, root: str | os.PathLike, run_id: str) -> None:
        self.run_id = run_id
        self.path = Path(root) / "runs" / run_id
        self.summary_path = self.path / "summary.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.config_path = self.path / "config.yaml"
        self.predictions_path = self.path / "predictions.conllu"
        self.checkpoint_path = self.path / "checkpoint.pt"
        self._lock_fh = None

    def check_writable(self) -> None:
        """Prove the results folder (``<root>/runs``) is writable, creating no run folder: a
        read-only or full folder fails before the data is loaded, not after."""
        _probe_writable(self.path.parent)

    def create(self) -> None:
        """Make the run's folder and prove it is writable."""
        _probe_writable(self.path)

    def lock(self) -> None:
        """Hold an exclusive lock for this run (released by the OS even on SIGKILL)."""
        import fcntl

        fh = open(self.path / ".lock", "a+")  # noqa: SIM115 - held for the run's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RunLocked(f"run {self.run_id} is being trained by another process") from None
        self._lock_fh = fh
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        """Drop half-written ``.<file>.*.tmp`` left by a killed writer. Safe only under the
        lock: every record write happens under it, so no live writer owns these files."""
        for tmp in self.path.glob(f".*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """``lock()`` for the body of a ``with`` block."""
        self.lock()
        try:
            yield
        finally:
            self.unlock()

    def unlock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def read_summary(self) -> dict | None:
        """The summary, or None when absent; a damaged one is reported and treated as absent."""
        if not self.summary_path.exists():
            return None
        try:
            summary = json.loads(self.summary_path.read_text())
            if not isinstance(summary, dict) or "status" not in summary:
                raise ValueError("no status field")
            return summary
        except (ValueError, OSError) as err:
            import warnings

            warnings.warn(
                f"{self.summary_path} is damaged ({err}); the run will be redone", stacklevel=2
            )
            return None

    def record_problem(self, summary: dict) -> str | None:
        """Why a finished record's files cannot be trusted, or None when they are intact."""
        digests = summary.get("record_files")
        if not isinstance(digests, dict):  # written before digests existed: check structure
            digests = {name: None for name in REQUIRED_FILES}
        for name in REQUIRED_FILES:
            if name not in digests:
                return f"the summary does not vouch for {name}"
        for name, digest in digests.items():
            if name in RECREATABLE_FILES:
                continue
            path = self.path / name
            if not path.is_file():
                return f"{name} is missing"
            if digest is not None and sha256_file(path) != digest:
                return f"{name} does not match the summary (truncated or changed)"
        try:  # also catches a legacy record's torn last line
            rows = [json.loads(line) for line in self.metrics_path.read_text().splitlines()]
        except (ValueError, OSError) as err:
            return f"metrics.jsonl is unreadable ({err})"
        epochs = sum(1 for r in rows if isinstance(r, dict) and r.get("kind") == "epoch")
        if epochs < int(summary.get("epochs_completed") or 0):
            return (
                f"metrics.jsonl has {epochs} epoch rows, the summary {summary['epochs_completed']}"
            )
        return None

    def finished_summary(self, warn: bool = True) -> dict | None:
        """The summary of a finished, intact record; None (with a warning for a damaged
        finished record, unless ``warn`` is False) when the run still has to be trained."""
        summary = self.read_summary()
        if summary is None or summary.get("status") not in FINISHED:
            return None
        problem = self.record_problem(summary)
        if problem is not None and not warn:
            return None
        if problem is not None:
            import warnings

            warnings.warn(
                f"run {self.run_id} is marked {summary['status']} but its record is damaged "
                f"({problem}); the run will be redone",
                stacklevel=2,
            )
            return None
        return summary

    def write_summary(self, record: RunSummary) -> None:
        """Write the summary atomically; a finished one also records its files' digests."""
        summary = record.to_dict()
        if record.status in FINISHED:
            summary = {
                **summary,
                "record_files": {
                    name: sha256_file(self.path / name)
                    for name in RECORD_FILES
                    if (self.path / name).is_file()
                },
            }
        atomic_write_json(self.summary_path, summary)

    def write_metrics(self, rows: Iterable[MetricsRow]) -> None:
        text = "".join(json.dumps(row.to_dict()) + "\n" for row in rows)
        atomic_write_text(self.metrics_path, text)
