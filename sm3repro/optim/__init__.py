"""Optimizers for the study: SM3-I/II, the catalog of every optimizer the harness runs, and a
registry building them from a config.

Names are imported on first use, so reading the catalog (as the report does) does not import
torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "CATALOG": "catalog",
    "OptimizerSpec": "catalog",
    "OPTIMIZERS": "registry",
    "build_optimizer": "registry",
    "check_optimizer_config": "registry",
    "optimizer_state_bytes": "registry",
    "SM3": "sm3.optimizer",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
