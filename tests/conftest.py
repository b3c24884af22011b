"""Shared fixtures: where the UD English-EWT r2.16 files are (tests never use the network)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from sm3repro.data.download import EWT_FILES
from sm3repro.paths import DATA_ENV, ewt_data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
# The fault harness (scripts/faultlib.py, scripts/faultcases.py) serves tests and scripts alike.
sys.path.insert(0, str(REPO_ROOT / "scripts"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests of the fused kernel itself skip, with the reason, where impl=fastest does not run
    it: it cannot be built (no C++ compiler or ninja) or is switched off
    (SM3REPRO_SM3_KERNEL=forloop); the rest run forloop."""
    if item.get_closest_marker("needs_fused_kernel"):
        from sm3repro.optim.sm3.optimizer import kernel_for

        try:
            available = kernel_for("fastest") is not None
        except RuntimeError:  # SM3REPRO_SM3_KERNEL=fused where the kernel cannot be built
            available = False
        if not available:
            pytest.skip(
                "SM3's fused C++ kernel is unavailable here (no compiler or ninja, or "
                "SM3REPRO_SM3_KERNEL=forloop): this test checks the kernel itself"
            )


@pytest.fixture(scope="session")
def ewt_dir() -> Path:
    """The EWT files, found as the harness finds them: $SM3REPRO_DATA, else the checkout's
    data/ud-english-ewt (what `make data` fills; `make test` runs it first)."""
    folder = ewt_data_dir(REPO_ROOT)
    missing = [name for name in EWT_FILES.values() if not (folder / name).is_file()]
    if missing:
        pytest.fail(
            f"UD English-EWT r2.16 files not found in {folder} (missing: {', '.join(missing)}). "
            "Run `make data` (offline: `make data DATA_MIRROR=/path/to/folder`), "
            f"or set {DATA_ENV} to a folder holding them.",
            pytrace=False,
        )
    return folder


@pytest.fixture(scope="session")
def ewt_train(ewt_dir: Path) -> Path:
    return ewt_dir / EWT_FILES["train"]


@pytest.fixture(scope="session")
def ewt_dev(ewt_dir: Path) -> Path:
    return ewt_dir / EWT_FILES["dev"]


@pytest.fixture(scope="session")
def ewt_test(ewt_dir: Path) -> Path:
    return ewt_dir / EWT_FILES["test"]


# -- running the harness's CLI in a subprocess -------------------------------------------------
# Small, fast settings for end-to-end runs: 200 training sentences, 100 for dev/test, 1 thread.
SMALL = [
    "data.max_train_sentences=200",
    "data.max_eval_sentences=100",
    "epochs=1",
    "torch_threads=1",
    "log_every=5",
]


def harness_env(tmp: Path, ewt_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a subprocess run: the EWT data from ``ewt_dir``, every output under ``tmp``."""
    env = dict(os.environ)
    env.update(
        SM3REPRO_DATA=str(ewt_dir),
        SM3REPRO_RESULTS=str(tmp / "results"),
        SM3REPRO_CACHE=str(tmp / "cache"),
        WANDB_MODE=env.get("WANDB_MODE_FOR_TESTS", "offline"),
        WANDB_SILENT="true",
        WANDB_DIR=str(tmp),
        WANDB_CACHE_DIR=str(tmp / "wandb-cache"),
        WANDB_CONFIG_DIR=str(tmp / "wandb-config"),
        WANDB_DATA_DIR=str(tmp / "wandb-data"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@pytest.fixture
def run_harness(tmp_path: Path, ewt_dir: Path):
    """Run ``python -m sm3repro.train ARGS`` in ``tmp_path``; returns the CompletedProcess."""
    import subprocess
    import sys

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 300, check: bool = True
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "sm3repro.train", *args],
            cwd=tmp_path,
            env=env or harness_env(tmp_path, ewt_dir),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"harness exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


def read_records(results: Path) -> dict[str, dict]:
    """run_id -> parsed summary.json for every run under ``results/runs``."""
    import json

    return {
        p.parent.name: json.loads(p.read_text())
        for p in sorted((results / "runs").glob("*/summary.json"))
    }
