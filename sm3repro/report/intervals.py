"""Comparisons with stated confidence: a ratio with its 95% interval, and equivalence (TOST).

Times are compared as ratios, on the log scale (a 10% slowdown and a 10% speed-up are the same
distance from 1). ``a / b`` is the ratio of geometric means with a t interval from scipy.stats:
paired by seed when the runs are interleaved seed block by seed block (each block's runs share
a host and an hour), Welch's otherwise. "About as fast" is two one-sided tests (statsmodels'
``ttost_paired``/``ttost_ind``) that the log ratio lies within ``±log(1 + margin)``.

The rule, at ``ALPHA``: *faster* when the interval lies below 1, *slower* when above 1,
*undecided* when it straddles 1; *equivalent* when the TOST p-value is below ``ALPHA``.
A run that never reaches its target has time ∞: a cell with such runs has no finite ratio, and
is *slower* only when every one of its runs misses while every run of the other cell reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

ALPHA = 0.05
EQUIVALENCE_MARGIN = 0.10  # "about as fast": within ±10% (on the log scale)


@dataclass(frozen=True)
class Ratio:
    """``a / b`` of two samples of positive times (seconds, minutes), with its interval."""

    ratio: float  # geometric mean of a / geometric mean of b (inf or nan where misses allow none)
    low: float
    high: float
    n_a: int
    n_b: int
    misses_a: int  # runs with an infinite time (target never reached)
    misses_b: int
    paired: bool
    equivalence_p: float  # TOST p-value for |log ratio| <= log(1 + EQUIVALENCE_MARGIN); nan if n/a
    alpha: float = ALPHA  # the interval is 1 - alpha; TOST decides at alpha

    @property
    def verdict(self) -> str:
        """``faster``, ``slower``, ``undecided`` (a / b), with ``equivalent`` where TOST says so."""
        if self.misses_a or self.misses_b:
            if self.misses_a == self.n_a and self.misses_b == 0:
                return "slower"
            if self.misses_b == self.n_b and self.misses_a == 0:
                return "faster"
            return "undecided"
        if self.high < 1:
            return "faster"
        if self.low > 1:
            return "slower"
        return "equivalent" if self.equivalence_p < self.alpha else "undecided"

    def text(self) -> str:
        """``0.82 [0.74, 0.91]`` (or the misses when there is no finite ratio)."""
        if self.misses_a or self.misses_b:
            return f"∞ ({self.misses_a}/{self.n_a} vs {self.misses_b}/{self.n_b} missed)"
        if math.isnan(self.low):
            return f"{self.ratio:.2f} [n too small]"
        return f"{self.ratio:.2f} [{self.low:.2f}, {self.high:.2f}]"


def ratio_interval(
    a: Sequence[float], b: Sequence[float], paired: bool, alpha: float = ALPHA
) -> Ratio:
    """``a / b`` with its ``1 - alpha`` t interval on log times; ``paired``: a[i] and b[i] are
    one seed block's runs."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired and len(a_arr) != len(b_arr):
        raise ValueError(f"paired samples differ in length: {len(a_arr)} vs {len(b_arr)}")
    misses_a, misses_b = int(np.isinf(a_arr).sum()), int(np.isinf(b_arr).sum())
    nan = float("nan")
    base = dict(n_a=len(a_arr), n_b=len(b_arr), misses_a=misses_a, misses_b=misses_b,
                paired=paired, alpha=alpha)  # fmt: skip
    if misses_a or misses_b or not len(a_arr) or not len(b_arr):
        return Ratio(ratio=math.inf if misses_a else nan, low=nan, high=nan, equivalence_p=nan,
                     **base)  # fmt: skip
    la, lb = np.log(a_arr), np.log(b_arr)
    ratio = math.exp(la.mean() - lb.mean())
    low = high = p_equal = nan
    bound = math.log1p(EQUIVALENCE_MARGIN)
    spread = np.ptp(la - lb) if paired else max(np.ptp(la), np.ptp(lb))
    if spread < 1e-12 and (len(la) >= 2 or len(lb) >= 2):
        # no spread at all (e.g. one host-speed factor per block): the interval is the point
        low = high = ratio
        p_equal = 0.0 if abs(math.log(ratio)) < bound else 1.0
    elif paired and len(la) >= 2:
        ci = stats.ttest_1samp(la - lb, 0.0).confidence_interval(1 - alpha)
        low, high = math.exp(ci.low), math.exp(ci.high)
        p_equal = float(ttost_paired(la, lb, -bound, bound)[0])
    elif not paired and len(la) >= 2 and len(lb) >= 2:
        ci = stats.ttest_ind(la, lb, equal_var=False).confidence_interval(1 - alpha)
        low, high = math.exp(ci.low), math.exp(ci.high)
        p_equal = float(ttost_ind(la, lb, -bound, bound, usevar="unequal")[0])
    return Ratio(ratio=ratio, low=low, high=high, equivalence_p=p_equal, **base)


# -- adding seeds where undecided (scripts/decide.py) ------------------------------------------
SEED_GROUP = 3  # seeds added per look
SEED_CAP = 9  # seeds per cell at most: looks at 3, 6 and 9 seeds


def spent_alpha(n_seeds: int, alpha: float = ALPHA) -> float:
    """The level at which a comparison of ``n_seeds`` paired seeds decides, so that looking
    again after each group of SEED_GROUP added seeds keeps the overall false-positive rate at
    ``alpha``: Lan-DeMets' Pocock-type spending ``alpha * ln(1 + (e - 1) t)``, t = n / SEED_CAP;
    each look gets the increment since the previous one (a Bonferroni split over the looks,
    valid whatever the correlation between them)."""
    look = max(1, math.ceil(min(n_seeds, SEED_CAP) / SEED_GROUP))
    spend = [alpha * math.log1p((math.e - 1) * min(1.0, k * SEED_GROUP / SEED_CAP))
             for k in (look - 1, look)]  # fmt: skip
    return spend[1] - spend[0]
