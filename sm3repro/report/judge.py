"""How a claim is judged: three-valued comparisons of seed means, one per check.

A :class:`Claim` (records in claims.py) lists its :class:`Check` s; :func:`judge` compares
each on the aggregated runs and keeps every check's outcome, so the verdict can be traced to
the check that decided it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from sm3repro.optim import catalog
from sm3repro.report.tables import DECIMALS
from sm3repro.report.timing import EAGER_MARK, TIMING_COLUMNS

LEGEND = (
    "How the rules decide: quantities are seed means ± std. A strict comparison (<, >) counts "
    'only when the two spreads do not overlap, else it is *undecided*. "Clearly" (> by x%) '
    "also needs the means more than x% apart. A tolerance comparison (≤ +x%, ≥ -x%, ≈ ±x%) "
    "holds when the means are within the tolerance and fails only when outside it with "
    "non-overlapping spreads. Verdict: *does not hold* if any part fails, else *inconclusive* "
    "if any part is undecided or data is missing, else *holds*. With one seed (n=1) there is "
    "no spread: std is 0 and the means decide."
)
MARK = {True: "yes", False: "no", None: "undecided"}


@dataclass(frozen=True)
class Stat:
    """A quantity over seeds; std is 0 for a single seed (no spread to compare)."""

    mean: float
    std: float
    n: int

    def overlaps(self, other: Stat) -> bool:
        return (
            self.mean - self.std <= other.mean + other.std
            and other.mean - other.std <= self.mean + self.std
        )


def _rel(a: float, b: float) -> float:
    if b == 0:
        return 0.0 if a == b else math.copysign(math.inf, a - b)
    return (a - b) / abs(b)


def compare(kind: str, a: Stat, b: Stat, rel: float = 0.0) -> bool | None:
    """Three-valued test of ``a <kind> b``: True, False, or None (undecided).

    ``<`` / ``>``: strict order, decided only when the mean ± std spreads do not overlap.
    ``>>``: a above b by more than ``rel`` (relative to b) with non-overlapping spreads.
    ``<~`` / ``>~`` / ``~``: a at most / at least / about b within ``rel``. These claim a
    tolerance, so they hold whenever the means are within it, and fail only when outside it
    with non-overlapping spreads.
    """
    r = _rel(a.mean, b.mean)
    if kind in ("<~", ">~", "~"):
        ok = {"<~": r <= rel, ">~": r >= -rel, "~": abs(r) <= rel}[kind]
        return True if ok else (None if a.overlaps(b) else False)
    if a.overlaps(b):
        return None
    return {"<": r < 0, ">": r > 0, ">>": r > rel}[kind]


def _symbol(kind: str, rel: float) -> str:
    return {
        "<": "<",
        ">": ">",
        ">>": f"> (by >{rel:.0%})",
        "<~": f"≤ (+{rel:.0%})",
        ">~": f"≥ (-{rel:.0%})",
        "~": f"≈ (±{rel:.0%})",
    }[kind]


@dataclass(frozen=True)
class Threshold:
    """A named relative tolerance; ``legend`` says what it means, with ``{}`` for the value."""

    value: float
    legend: str

    def describe(self) -> str:
        return self.legend.format(self.value)


@dataclass(frozen=True)
class Check:
    """``subject <kind> other`` on column ``col`` at batch size ``batch``, e.g. SM3-II < Adam."""

    what: str  # the quantity in words, as the evidence prints it
    col: str
    batch: int
    kind: str  # see compare()
    other: str
    threshold: Threshold | None = None
    subject: str = "sm3_ii"  # our stand-in for the study's "SM3" (it never says which variant)

    @property
    def rel(self) -> float:
        return self.threshold.value if self.threshold is not None else 0.0


@dataclass(frozen=True)
class Claim:
    """One claim of the study: its words, our rule for it in words, and the checks that apply it."""

    number: int
    statement: str
    rule: str
    checks: tuple[Check, ...]

    @property
    def thresholds(self) -> tuple[Threshold, ...]:
        return tuple(dict.fromkeys(c.threshold for c in self.checks if c.threshold is not None))


@dataclass(frozen=True)
class CheckResult:
    """One check on the data: the two seed statistics (None: no data) and the outcome."""

    check: Check
    subject: Stat | None
    other: Stat | None
    outcome: bool | None  # True: passed, False: failed, None: undecided or no data
    missing: tuple[str, ...] = ()
    eager: bool = False  # a timing compared here includes SM3 runs on its eager path

    @property
    def line(self) -> str | None:
        """The evidence line, e.g. ``b64 CPU%: SM3-II 38.3 ± 0.2 < Adam 53.7 ± 0.3 (-28.7%): yes``."""
        if self.missing:
            return None
        c, a, b = self.check, self.subject, self.other
        d = DECIMALS[c.col]
        fmt = lambda s: f"{s.mean:.{d}f} ± {s.std:.{d}f}"  # noqa: E731
        return (
            f"b{c.batch} {c.what}: {catalog.label(c.subject)} {fmt(a)} {_symbol(c.kind, c.rel)} "
            f"{catalog.label(c.other)} {fmt(b)} ({_rel(a.mean, b.mean):+.1%}): {MARK[self.outcome]}"
        ) + (f" {EAGER_MARK}" if self.eager else "")


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    checks: tuple[CheckResult, ...]

    @property
    def missing(self) -> list[str]:
        return list(dict.fromkeys(m for r in self.checks for m in r.missing))

    @property
    def verdict(self) -> str:
        if self.missing:
            return f"inconclusive (no data for {', '.join(self.missing)})"
        outcomes = [r.outcome for r in self.checks]
        if any(o is False for o in outcomes):
            verdict = "does not hold"
        elif any(o is None for o in outcomes):
            verdict = "inconclusive"
        else:
            verdict = "holds"
        one_seed = min(s.n for r in self.checks for s in (r.subject, r.other)) == 1
        return verdict + (" (n=1: no seed spread, judged on means)" if one_seed else "")

    @property
    def evidence(self) -> str:
        return "; ".join(r.line for r in self.checks if r.line is not None)


def _stat(stats: pd.DataFrame, opt: str, batch: int, col: str) -> Stat | str:
    """The seed statistic, or what is missing."""
    if (opt, batch) not in stats.index:
        return f"{opt}@{batch}"
    row = stats.loc[(opt, batch)]
    if pd.isna(row[f"{col}_mean"]):
        return f"{col} of {opt}@{batch}"
    std = row[f"{col}_std"]
    return Stat(float(row[f"{col}_mean"]), 0.0 if pd.isna(std) else float(std), int(row["n"]))


def _eager(stats: pd.DataFrame, check: Check) -> bool:
    """Whether a timing check compares a cell whose timed runs include SM3's eager path
    (aggregate()'s ``sm3_eager``): the evidence line is marked, the outcome stays as it is."""
    if check.col not in TIMING_COLUMNS or "sm3_eager" not in stats:
        return False
    cells = [(opt, check.batch) for opt in (check.subject, check.other)]
    return any(cell in stats.index and stats.loc[cell, "sm3_eager"] > 0 for cell in cells)


def run_check(check: Check, stats: pd.DataFrame) -> CheckResult:
    a = _stat(stats, check.subject, check.batch, check.col)
    b = _stat(stats, check.other, check.batch, check.col)
    missing = tuple(s for s in (a, b) if isinstance(s, str))
    if missing:
        return CheckResult(check, None, None, None, missing)
    outcome = compare(check.kind, a, b, check.rel)
    return CheckResult(check, a, b, outcome, eager=_eager(stats, check))


def judge(claim: Claim, stats: pd.DataFrame) -> ClaimResult:
    """Every check of ``claim`` on ``stats`` (aggregate()'s seed means per optimizer, batch)."""
    return ClaimResult(claim, tuple(run_check(c, stats) for c in claim.checks))
