"""The mark on timings where SM3 ran its eager path instead of its fused kernel.

A run whose SM3 stepped on its eager path (:func:`sm3repro.record.implementation.sm3_ran_eager`)
timed that path, not the fused kernel: wherever runtimes are compared its figures are kept (no
verdict changes) and marked with EAGER_MARK, and EAGER_NOTE under the table says why.
"""

from __future__ import annotations

from collections.abc import Iterable

EAGER_MARK = "†"
EAGER_NOTE = (
    f"{EAGER_MARK} SM3 ran its eager path (fused kernel unavailable or not yet written) in runs "
    "behind the marked timings: they time that path, not SM3's fused kernel; the verdicts use "
    "them as recorded."
)


def eager_footnote(lines: Iterable[str]) -> list[str]:
    """The eager-path note, as a list of one line, when any of ``lines`` carries its mark."""
    return [EAGER_NOTE] if any(EAGER_MARK in line for line in lines) else []


def note_lines(lines: Iterable[str]) -> list[str]:
    """The note and a blank line after it, when any of ``lines`` carries the mark."""
    return [line for note in eager_footnote(lines) for line in (note, "")]
