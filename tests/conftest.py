"""Shared fixtures: where the UD English-EWT r2.16 files are (tests never use the network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sm3repro.data.download import EWT_FILES

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ewt_dir() -> Path:
    """The read-only EWT mirror: $SM3REPRO_DATA_MIRROR, else ../shared/data/ud-english-ewt."""
    env = os.environ.get("SM3REPRO_DATA_MIRROR")
    folder = Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "ud-english-ewt"
    missing = [name for name in EWT_FILES.values() if not (folder / name).is_file()]
    if missing:
        pytest.fail(
            f"UD English-EWT r2.16 files not found in {folder} (missing: {', '.join(missing)}). "
            "Set SM3REPRO_DATA_MIRROR to a folder holding "
            f"{', '.join(EWT_FILES.values())}.",
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
