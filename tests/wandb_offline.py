"""Read back an offline W&B run with W&B's own reader, `wandb leet inspect` (wandb 0.31).

`--summary --json` gives the merged config, the final summary, the state and the exit code;
`--json` gives every record of the run file, one JSON object a line, from which we keep the
history rows, the metric definitions, the artifacts and the run's job type.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# The `wandb` console script of the running interpreter's environment.
WANDB_CLI = str(Path(sys.executable).with_name("wandb"))


def find_run_file(run_dir: Path, timeout: float = 15.0) -> Path:
    """The one `run-*.wandb` in `run_dir` (an `offline-run-*` folder, or a folder above one).

    wandb-core, a process of its own, can still be creating the file when the run's process has
    exited (seen on a loaded machine), so a missing file is waited for up to `timeout` s.
    """
    run_dir = Path(run_dir)
    deadline = time.monotonic() + timeout
    while True:
        files = sorted(run_dir.glob("run-*.wandb")) or sorted(run_dir.rglob("run-*.wandb"))
        files = [f for f in files if "latest-run" not in f.parts]
        if files or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if len(files) != 1:
        raise FileNotFoundError(f"expected one run-*.wandb under {run_dir}, found {files}")
    return files[0]


def _inspect(path: Path, *flags: str) -> str:
    proc = subprocess.run(
        [WANDB_CLI, "leet", "inspect", "--json", *flags, str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"wandb leet inspect {path} failed: {proc.stderr.strip()}")
    return proc.stdout


def read_offline_run(run_dir: Path, timeout: float = 15.0) -> dict[str, Any]:
    """{"config", "history", "summary", "exit_code", "job_type", "metrics", "artifacts"} of the
    finished offline run in `run_dir` (its `offline-run-*` folder or a folder holding one).

    `run.finish()` returns before wandb-core has flushed the file (it closes the stream in
    the background), so a reader in the same process waits up to `timeout` s for the exit
    record; process exit does wait, so runs written by subprocesses are complete.
    """
    path = find_run_file(run_dir)
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = [json.loads(line) for line in _inspect(path).splitlines() if line.strip()]
        except (RuntimeError, json.JSONDecodeError):  # caught mid-write; an error if it stays
            if time.monotonic() > deadline:
                raise
            records = []
        if any(r["type"] == "exit" for r in records):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} has no exit record after {timeout} s (run not finished?)")
        time.sleep(0.1)
    state = json.loads(_inspect(path, "--summary"))
    of_type = lambda kind: [r[kind] for r in records if r["type"] == kind]  # noqa: E731
    artifacts = []
    for artifact in of_type("artifact"):
        files = {entry["path"]: entry for entry in artifact["manifest"].get("contents", [])}
        metadata = json.loads(artifact.get("metadata") or "{}")
        artifacts.append({**artifact, "files": files, "metadata": metadata})
    return {
        "config": state["config"],
        "summary": state["summary"],
        "exit_code": state["exit_code"],
        "history": [r["item"] for r in of_type("history")],
        "job_type": next((r.get("job_type") for r in of_type("run")), None),
        "metrics": of_type("metric"),
        "artifacts": artifacts,
    }
