"""Run records on disk: atomic writes, so a crash never leaves a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


# -- run identity ------------------------------------------------------------------------
# Keys that change how or where a run is logged, not what it computes.
_NOT_IDENTITY = {"results_dir", "cache_dir", "logger", "torch_threads", "log_every",
                 "checkpoint", "debug", "experiment_name"}  # fmt: skip


def run_identity(config: dict) -> dict:
    """The part of a resolved config that decides a run's results.

    Data paths enter by file name only, so moving the data folder keeps run ids stable.
    """
    ident = {k: v for k, v in config.items() if k not in _NOT_IDENTITY}
    data = dict(ident.get("data", {}))
    for split in ("train", "dev", "test", "embeddings"):
        if data.get(split):
            data[split] = Path(data[split]).name
    data.pop("dir", None)
    ident["data"] = data
    return ident


def run_id_for(config: dict) -> str:
    """``<optimizer>-b<batch>-s<seed>-<hash>``: readable, and equal for equal configs."""
    import hashlib

    ident = run_identity(config)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    return f"{config['optimizer']['name']}-b{config['batch_size']}-s{config['seed']}-{digest}"


# -- one run's folder --------------------------------------------------------------------
FINISHED = ("completed", "diverged")


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

    def create(self) -> None:
        """Make the folder and prove it is writable before any training starts."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path / ".write-probe", "ok\n")
            (self.path / ".write-probe").unlink()
        except OSError as err:
            raise OSError(f"results folder {self.path} is not writable: {err.strerror or err}") from None

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

            warnings.warn(f"{self.summary_path} is damaged ({err}); the run will be redone", stacklevel=2)
            return None

    def is_finished(self) -> bool:
        summary = self.read_summary()
        return summary is not None and summary.get("status") in FINISHED

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary_path, summary)

    def write_metrics(self, rows: list[dict]) -> None:
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
