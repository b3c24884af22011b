"""Experiment tracking: a no-op Tracker and a W&B-backed one.

The local run record (metrics.jsonl, summary.json) is the source of truth; W&B is a mirror.
So anything that goes wrong with W&B (no network, bad credentials, a timeout) becomes a
warning and a no-op Tracker, never a failed training run.

Facts about wandb 0.31 this relies on:
- an explicit `mode=` passed to wandb.init beats the WANDB_MODE environment variable, so we
  resolve the precedence (environment first) ourselves;
- online without network blocks ~100 s then raises; Settings(init_timeout=...) bounds that;
- system-metric sampling (x_disable_stats) costs CPU in the measured process tree and would
  distort the CPU% we record, so it is off;
- `run.finish()` returns before wandb-core has flushed the `run-*.wandb` file (it closes
  the stream in the background); process exit waits for it, a reader in the same process
  must wait for the exit record (see tests/wandb_offline.py);
- `run.log_artifact` works offline: the files are copied to a staging folder
  (WANDB_DATA_DIR/artifacts/staging) and the artifact record goes into the run file, so
  `wandb sync` uploads them later;
- `import wandb` takes ~0.4 s; we import it lazily so that `logger.name: none` or
  `mode: disabled` runs never touch it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")
# W&B groups runs by job type: training runs, report runs, and the memory-measurement arm's.
JOB_TYPES = ("train", "report", "memory")
# The dev scores whose best epoch the run summary shows (the dashboard's summary column).
BEST_DEV_METRICS = ("dev_las_micro", "dev_las_macro")
_MODE_ALIASES = {"dryrun": "offline"}  # W&B's old name for offline
_online_failure: str | None = None  # why online init failed earlier in this process, if it did


class Tracker:
    """No-op tracker: the interface every tracker implements. Usable as a context manager."""

    enabled = False

    def log_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        pass

    def log_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        pass

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        pass

    def log_table(self, name: str, table: Any) -> None:
        """`table` is a pandas.DataFrame."""

    def log_image(self, name: str, path: str | Path) -> None:
        pass

    def log_files(self, name: str, kind: str, paths: list[Path]) -> None:
        """Log `paths` (files) as one artifact `name` of type `kind` (e.g. a run's record)."""

    def finish(self, exit_code: int = 0) -> None:
        pass

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # Always finish, and mark the run failed if the block raised; never mask the error.
        self.finish(exit_code=1 if exc_type is not None else 0)


def resolve_wandb_mode(config_mode: str | None) -> str:
    """WANDB_MODE (environment) beats `logger.mode` (config); the default is offline."""
    env = os.environ.get("WANDB_MODE", "").strip()
    raw = env or (config_mode.strip() if isinstance(config_mode, str) else config_mode) or "offline"
    mode = _MODE_ALIASES.get(str(raw).lower(), str(raw).lower())
    if mode not in WANDB_MODES:
        source = "WANDB_MODE" if env else "logger.mode"
        raise ValueError(
            f"invalid W&B mode {raw!r} (from {source}); logger.mode / WANDB_MODE must be one "
            f"of {', '.join(WANDB_MODES)} (or 'dryrun', meaning offline)"
        )
    return mode


def wandb_safe_id(run_id: str) -> str:
    """A W&B run id from ours: W&B forbids characters such as :;,#?/' in ids.

    When anything had to change, a short hash of the original keeps distinct ids distinct.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", run_id.strip())[:56]
    if safe != run_id:
        safe = f"{safe}-{hashlib.sha1(run_id.encode()).hexdigest()[:7]}"
    return safe


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}/"))
        else:
            out[key] = v
    return out


def _plain(obj: Any) -> Any:
    """Plain dicts/lists from OmegaConf nodes or other mappings, so W&B can serialise them."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "ListConfig":
        return [_plain(v) for v in obj]
    return obj


def _prefixed(prefix: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k if k.startswith(prefix) else f"{prefix}{k}": v for k, v in metrics.items()}


class WandbTracker(Tracker):
    """Mirror of the run record in W&B.

    Steps: W&B wants one monotonically increasing step across all `log` calls, so every
    call uses the largest training step seen so far; epoch metrics are logged at the step
    where the epoch ended, with `epoch` as their chart axis (define_metric).
    Keys: step metrics go under `train/`, epoch metrics under `epoch/`; the summary keeps the
    best (max) dev LAS over epochs. Tables and images the report logs are also collected into
    one artifact at finish, so its files travel with the run.
    """

    enabled = True

    def __init__(self, run: Any, wandb_module: Any) -> None:
        self.run = run
        self._wandb = wandb_module
        self._step = 0
        self._finished = False
        self._failed: set[str] = set()
        self._outputs: dict[str, Any] = {}  # report tables and figures, for the artifact
        run.define_metric("epoch")
        run.define_metric("epoch/*", step_metric="epoch")
        for name in BEST_DEV_METRICS:
            run.define_metric(f"epoch/{name}", step_metric="epoch", summary="max")

    def _guard(self, what: str, call: Callable[[], Any]) -> None:
        # A W&B hiccup mid-run must not kill training: warn once per kind, keep going.
        try:
            call()
        except Exception as exc:
            if what not in self._failed:
                self._failed.add(what)
                warnings.warn(f"W&B {what} failed: {exc!r}", RuntimeWarning, stacklevel=3)

    def _log(self, what: str, row: dict[str, Any]) -> None:
        self._guard(what, lambda: self.run.log(row, step=self._step))

    def log_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._step = max(self._step, int(step))
        self._log("log", _prefixed("train/", metrics))

    def log_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        self._log("log", {**_prefixed("epoch/", metrics), "epoch": epoch})

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self._guard("summary", lambda: self.run.summary.update(_flatten(_plain(summary))))

    def log_table(self, name: str, table: Any) -> None:
        def log() -> None:
            # W&B cannot serialise pandas' missing values (pd.NA); they become nulls.
            plain = table.astype(object).where(table.notna(), None)
            wandb_table = self._wandb.Table(dataframe=plain)
            self.run.log({name: wandb_table}, step=self._step)
            self._outputs[f"{name}.table.json"] = wandb_table

        self._guard("table", log)

    def log_image(self, name: str, path: str | Path) -> None:
        def log() -> None:
            self.run.log({name: self._wandb.Image(str(path))}, step=self._step)
            self._outputs[Path(path).name] = Path(path)

        self._guard("image", log)

    def log_files(self, name: str, kind: str, paths: list[Path]) -> None:
        def log() -> None:
            artifact = self._wandb.Artifact(self._artifact_name(name), type=kind)
            for path in paths:
                artifact.add_file(str(path), name=Path(path).name)
            self.run.log_artifact(artifact)

        self._guard("artifact", log)

    def _artifact_name(self, name: str) -> str:
        # Artifact names allow letters, digits, '-', '_' and '.'.
        return re.sub(r"[^A-Za-z0-9._-]", "-", name)

    def _log_outputs(self) -> None:
        """The collected tables and figures as one artifact named after the run."""
        artifact = self._wandb.Artifact(self._artifact_name(f"outputs-{self.run.id}"), "report")
        for name, item in self._outputs.items():
            if isinstance(item, Path):
                artifact.add_file(str(item), name=f"figures/{name}")
            else:
                artifact.add(item, f"tables/{name.removesuffix('.table.json')}")
        self.run.log_artifact(artifact)

    def finish(self, exit_code: int = 0) -> None:
        if self._finished:
            return
        self._finished = True
        if self._outputs:
            self._guard("artifact", self._log_outputs)
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as exc:  # the local record is already complete; do not fail the run
            warnings.warn(f"W&B finish failed: {exc!r}", RuntimeWarning, stacklevel=2)


def make_tracker(
    cfg: Mapping[str, Any] | None,
    run_name: str,
    run_id: str,
    config: Mapping[str, Any],
    group: str | None,
    tags: list[str],
    directory: str | Path,
    job_type: str | None = None,
) -> Tracker:
    """A Tracker for the `logger` config node: `{name: wandb, project, entity, mode,
    init_timeout}` or `{name: none}`. `job_type` is one of JOB_TYPES. Falls back to a no-op
    Tracker, with a warning, when W&B cannot start, so training continues and the local
    record stays complete."""
    global _online_failure
    mode = _wandb_mode(cfg, job_type)
    if mode is None:
        return Tracker()
    try:
        import wandb

        Path(directory).mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=cfg.get("project") or "sm3repro", entity=cfg.get("entity") or None,
            group=group, job_type=job_type, tags=list(tags), name=run_name,
            id=wandb_safe_id(run_id), resume="allow", config=_plain(config), dir=str(directory),
            mode=mode,
            reinit="finish_previous",  # several runs in one process (Hydra multirun)
            settings=_wandb_settings(wandb, cfg),
        )  # fmt: skip
        try:
            return WandbTracker(run, wandb)
        except Exception:
            run.finish(exit_code=1)
            raise
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}".strip()
        if mode == "online":
            _online_failure = problem
        _warn(f"W&B ({mode}) could not start, continuing without it: {problem}")
        return Tracker()


def _wandb_mode(cfg: Mapping[str, Any] | None, job_type: str | None) -> str | None:
    """The W&B mode to start in, or None where no W&B run should start."""
    name = str((cfg or {}).get("name") or "none").lower()
    if name in ("none", "null"):
        return None
    if name != "wandb":
        raise ValueError(f"logger.name must be 'wandb' or 'none', got {name!r}")
    if job_type is not None and job_type not in JOB_TYPES:
        raise ValueError(f"job_type must be one of {', '.join(JOB_TYPES)}, got {job_type!r}")
    mode = resolve_wandb_mode(cfg.get("mode"))
    if mode == "disabled":
        return None  # do not even import wandb
    if mode == "online" and _online_failure is not None:
        # Without network every init waits init_timeout; do not pay that for every job
        # of a sweep run in this process.
        _warn(f"W&B online skipped: it already failed in this process ({_online_failure})")
        return None
    return mode


def _wandb_settings(wandb: Any, cfg: Mapping[str, Any]) -> Any:
    return wandb.Settings(
        init_timeout=float(cfg.get("init_timeout") or 30),
        silent=True,
        console="off",  # the run's own log is on disk; console capture wraps stdout
        save_code=False,
        disable_code=True,
        x_disable_stats=True,  # no system-metrics sampler: it would distort our CPU%
    )


def side_run_tracker(job_type: str, config: Mapping[str, Any], group: str) -> Tracker:
    """A W&B run beside the training runs (the report's, the memory arm's), named
    ``<job_type>-<UTC stamp>``, with conf/logger/wandb.yaml's settings: offline unless
    WANDB_MODE says otherwise, like the training runs."""
    from datetime import UTC, datetime

    from omegaconf import OmegaConf

    from sm3repro.paths import config_dir

    logger_cfg = OmegaConf.load(config_dir() / "logger" / "wandb.yaml")
    name = f"{job_type}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    return make_tracker(
        logger_cfg, run_name=name, run_id=name, config=config, group=group, tags=[job_type],
        directory=str(logger_cfg.get("dir", ".")), job_type=job_type,
    )  # fmt: skip


def _warn(message: str) -> None:
    log.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
