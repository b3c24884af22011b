"""Where the harness finds its Hydra configs and the EWT data, in one place.

Configs: developers edit the top-level ``conf/`` folder; a wheel carries the same files as
``sm3repro/conf`` (pyproject maps one onto the other), so a non-editable install runs from any
folder. Data: ``data/ud-english-ewt`` (what ``make data`` fills), or ``$SM3REPRO_DATA``.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_ENV = "SM3REPRO_DATA"
DEFAULT_DATA_DIR = Path("data") / "ud-english-ewt"


def config_dir() -> Path:
    """The folder holding ``config.yaml``: ``sm3repro/conf`` in an installed wheel, else the
    source checkout's ``conf/`` (a plain checkout or an editable install)."""
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"no Hydra config folder: neither {PACKAGE_DIR / 'conf'} nor {PACKAGE_DIR.parent / 'conf'} "
        "holds config.yaml (reinstall the package, or run from a source checkout)"
    )


def ewt_data_dir(root: str | os.PathLike | None = None) -> Path:
    """The EWT folder: ``$SM3REPRO_DATA`` if set, else ``data/ud-english-ewt`` under ``root``
    (the working folder when None, as the data config resolves it)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(root) / DEFAULT_DATA_DIR if root is not None else DEFAULT_DATA_DIR
