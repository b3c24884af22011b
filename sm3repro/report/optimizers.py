"""How the report names, orders and draws each optimizer (one entry per optimizer).

Tables and figures show the optimizers present in the runs, in this order; one missing here
still appears, after these, under its own name and in matplotlib's next colour.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# name -> (display label, matplotlib line style); the order is the rows' and legends' order
DISPLAY: dict[str, tuple[str, dict[str, Any]]] = {
    "sm3_ii": ("SM3-II", dict(color="tab:red")),
    "sm3_i": ("SM3-I", dict(color="tab:orange", linestyle="--")),
    "sgd": ("SGD", dict(color="tab:gray")),
    "adagrad": ("Adagrad", dict(color="tab:green")),
    "adam": ("Adam", dict(color="tab:blue")),
}


def label(name: str) -> str:
    return DISPLAY[name][0] if name in DISPLAY else name


def style(name: str) -> dict[str, Any]:
    return dict(DISPLAY[name][1]) if name in DISPLAY else {}


def ordered(names: Iterable[str]) -> list[str]:
    """``names`` without repeats: known optimizers in display order, then the rest by name."""
    names = set(names)
    return [n for n in DISPLAY if n in names] + sorted(names - DISPLAY.keys())
