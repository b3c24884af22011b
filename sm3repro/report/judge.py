"""How a claim is judged: three-valued comparisons of seed means, one per check.

A :class:`Claim` (entries in claims.py) lists its :class:`Check` s; :func:`judge` compares each
on the aggregated runs and keeps every check's outcome, so the verdict can be traced to the
check that decided it. A claim may also be judged in :class:`Tier` s (speed_claims.py, memory.py),
each a row of its own in the report's summary.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from sm3repro.optim import catalog
from sm3repro.report.eager import EAGER_MARK
from sm3repro.report.quantities import Quantity

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
SUBJECT = "sm3_ii"  # our stand-in for the study's "SM3" (it never says which variant)


class Op(enum.StrEnum):
    """How a check compares SM3-II's seed mean ``a`` with the other's ``b`` (the value is the
    short form). Whether a tolerance is one-sided or two-sided is in the name."""

    BELOW = "<"  # a < b, decided only when the mean ± std spreads do not overlap
    ABOVE = ">"  # a > b, likewise
    ABOVE_BY_MORE_THAN = ">>"  # a > b by more than the tolerance (relative to b), spreads apart
    AT_MOST_ABOVE_BY = "<~"  # one-sided: a <= b (1 + x); any amount below holds
    AT_MOST_BELOW_BY = ">~"  # one-sided: a >= b (1 - x); any amount above holds
    WITHIN_EITHER_SIDE = "~"  # two-sided: |a - b| <= x |b|

    @property
    def tolerance(self) -> bool:
        """A tolerance comparison: holds within the tolerance whatever the spreads."""
        return self in (Op.AT_MOST_ABOVE_BY, Op.AT_MOST_BELOW_BY, Op.WITHIN_EITHER_SIDE)

    def symbol(self, rel: float) -> str:
        """How an evidence line prints it, e.g. ``≥ (-1%)``."""
        return {
            Op.BELOW: "<",
            Op.ABOVE: ">",
            Op.ABOVE_BY_MORE_THAN: f"> (by >{rel:.0%})",
            Op.AT_MOST_ABOVE_BY: f"≤ (+{rel:.0%})",
            Op.AT_MOST_BELOW_BY: f"≥ (-{rel:.0%})",
            Op.WITHIN_EITHER_SIDE: f"≈ (±{rel:.0%})",
        }[self]


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
    if b == 0:  # no scale to be relative to: equal, or infinitely far on a's side
        return 0.0 if a == 0 else math.copysign(math.inf, a)
    return (a - b) / abs(b)


def compare(op: Op | str, a: Stat, b: Stat, rel: float = 0.0) -> bool | None:
    """Three-valued test of ``a <op> b``: True, False, or None (undecided).

    Strict (BELOW, ABOVE, ABOVE_BY_MORE_THAN): decided only when the mean ± std spreads do not
    overlap. Tolerance (AT_MOST_ABOVE_BY, AT_MOST_BELOW_BY, WITHIN_EITHER_SIDE): these claim a
    tolerance, so they hold whenever the means are within it, and fail only when outside it
    with non-overlapping spreads.
    """
    op = Op(op)
    r = _rel(a.mean, b.mean)
    if op.tolerance:
        ok = {Op.AT_MOST_ABOVE_BY: r <= rel, Op.AT_MOST_BELOW_BY: r >= -rel,
              Op.WITHIN_EITHER_SIDE: abs(r) <= rel}[op]  # fmt: skip
        return True if ok else (None if a.overlaps(b) else False)
    if a.overlaps(b):
        return None
    return {Op.BELOW: r < 0, Op.ABOVE: r > 0, Op.ABOVE_BY_MORE_THAN: r > rel}[op]


def verdict_of(outcomes: Iterable[bool | None], no_data: str = "inconclusive") -> str:
    """*does not hold* if any part fails, else *inconclusive* if any is undecided, else
    *holds*; ``no_data`` when there are no parts at all."""
    outcomes = list(outcomes)
    if not outcomes:
        return no_data
    if any(o is False for o in outcomes):
        return "does not hold"
    return "inconclusive" if any(o is None for o in outcomes) else "holds"


@dataclass(frozen=True)
class Threshold:
    """A named relative tolerance; ``legend`` says what it means, with ``{}`` for the value."""

    value: float
    legend: str

    def describe(self) -> str:
        return self.legend.format(self.value)


@dataclass(frozen=True)
class Check:
    """``subject <op> other`` on a quantity at batch size ``batch``, e.g. SM3-II < Adam."""

    quantity: Quantity
    batch: int
    op: Op
    other: str
    threshold: Threshold | None = None
    subject: str = SUBJECT

    @property
    def col(self) -> str:
        return self.quantity.name

    @property
    def rel(self) -> float:
        return self.threshold.value if self.threshold is not None else 0.0


@dataclass(frozen=True)
class Tier:
    """Another way a claim is judged, a row of its own in the summary: a per-run figure compared
    as a ratio with a 95% interval (``INTERVALS``, speed_claims.py), or the memory arm's records
    at one of its sizes (``MEMORY_ARM``, memory.py)."""

    name: str  # "fixed epochs", "at the study's size"
    judged_by: str  # INTERVALS or MEMORY_ARM
    figure: str = ""  # INTERVALS: the per-run figure compared (lower is better)
    width: str = ""  # MEMORY_ARM: "smallest" or "largest" embedding width of the arm's grid


INTERVALS, MEMORY_ARM = "intervals", "memory arm"


@dataclass(frozen=True)
class Claim:
    """One claim of the study: its words, our rule for it in words, the checks that apply it to
    seed means, and the tiers it is judged in besides. In every tier SM3-II must be decidedly
    below each optimizer of ``below`` (faster, cheaper, smaller) and within ±10% of each of
    ``about``."""

    number: int
    statement: str
    rule: str
    checks: tuple[Check, ...]
    tiers: tuple[Tier, ...] = ()
    below: tuple[str, ...] = ()
    about: tuple[str, ...] = ()

    @property
    def thresholds(self) -> tuple[Threshold, ...]:
        return tuple(dict.fromkeys(c.threshold for c in self.checks if c.threshold is not None))

    @property
    def optimizers(self) -> frozenset[str]:
        """Every optimizer the claim reads: its checks' two sides and its tiers' comparators."""
        sides = {name for c in self.checks for name in (c.subject, c.other)}
        return frozenset({*sides, *([SUBJECT] if self.tiers else []), *self.below, *self.about})

    def tiers_judged_by(self, kind: str) -> tuple[Tier, ...]:
        return tuple(t for t in self.tiers if t.judged_by == kind)


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
        d = c.quantity.decimals
        fmt = lambda s: f"{s.mean:.{d}f} ± {s.std:.{d}f}"  # noqa: E731
        return (
            f"b{c.batch} {c.quantity.words}: {catalog.label(c.subject)} {fmt(a)} "
            f"{c.op.symbol(c.rel)} {catalog.label(c.other)} {fmt(b)} "
            f"({_rel(a.mean, b.mean):+.1%}): {MARK[self.outcome]}"
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
        verdict = verdict_of(r.outcome for r in self.checks)
        one_seed = any(s.n == 1 for r in self.checks for s in (r.subject, r.other))
        return verdict + (" (n=1: no seed spread, judged on means)" if one_seed else "")

    @property
    def evidence(self) -> str:
        return "; ".join(r.line for r in self.checks if r.line is not None)

    @property
    def deciding(self) -> list[str]:
        """The evidence lines that decide the verdict: the failed checks when it does not hold,
        else the undecided ones; every line when it holds."""
        for outcome in (False, None):
            lines = [r.line for r in self.checks if r.outcome is outcome and r.line is not None]
            if lines:
                return lines
        return [r.line for r in self.checks if r.line is not None]

    @property
    def eager(self) -> bool:
        return any(r.eager for r in self.checks)


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
    if not check.quantity.timing or "sm3_eager" not in stats:
        return False
    cells = [(opt, check.batch) for opt in (check.subject, check.other)]
    return any(cell in stats.index and stats.loc[cell, "sm3_eager"] > 0 for cell in cells)


def run_check(check: Check, stats: pd.DataFrame) -> CheckResult:
    a = _stat(stats, check.subject, check.batch, check.col)
    b = _stat(stats, check.other, check.batch, check.col)
    missing = tuple(s for s in (a, b) if isinstance(s, str))
    if missing:
        return CheckResult(check, None, None, None, missing)
    outcome = compare(check.op, a, b, check.rel)
    return CheckResult(check, a, b, outcome, eager=_eager(stats, check))


def judge(claim: Claim, stats: pd.DataFrame) -> ClaimResult:
    """Every check of ``claim`` on ``stats`` (aggregate()'s seed means per optimizer, batch)."""
    return ClaimResult(claim, tuple(run_check(c, stats) for c in claim.checks))
