"""SM3 (Anil et al., 2019): the optimizer, its fused and forloop paths, and the reference rule.

``SM3`` is imported on first use, so ``python -m sm3repro.optim.sm3.fused`` (the kernel's
builder) runs its module once, not after the optimizer has already imported it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SM3"]


def __getattr__(name: str) -> Any:
    if name != "SM3":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(f"{__name__}.optimizer").SM3
