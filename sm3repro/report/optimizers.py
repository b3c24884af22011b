"""How the report names, orders and draws each optimizer: views of the optimizer catalog.

Tables and figures show the optimizers present in the runs, in catalog order; one the catalog
does not know (a record from elsewhere) still appears, after these, under its own name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sm3repro.optim.catalog import CATALOG


def label(name: str) -> str:
    return CATALOG[name].label if name in CATALOG else name


def style(name: str) -> dict[str, Any]:
    return dict(CATALOG[name].style) if name in CATALOG else {}


def ordered(names: Iterable[str]) -> list[str]:
    """``names`` without repeats: known optimizers in catalog order, then the rest by name."""
    names = set(names)
    return [n for n in CATALOG if n in names] + sorted(names - CATALOG.keys())
