"""Claims 3 (speed) and 4 (CPU) in tiers, each judged by its own rule under every protocol.

Tiers, each a quantity per run (lower is better) for claim 3 and for claim 4:

* *fixed epochs*: the training loop's runtime over the protocol's epochs, and its CPU-seconds
  per 1,000 training examples (what the report judged before);
* *time to target*: training seconds until dev macro LAS reaches 95% of the best baseline's
  level (time_to_target.py), and the CPU-seconds spent until then (the run's CPU rate times it);
* *optimizer step*: the step's own milliseconds and CPU-seconds per 1,000 examples, measured
  inside the run (phase timing, runs since issue 24); the overhead relative to forward+backward
  and the largest whole-run saving it allows are shown beside it.

Every comparison is SM3-II against Adam, Adagrad and SGD at each batch size, as a ratio with a
95% interval (intervals.py). SM3-II runs twice where the protocol has both: dense, and at its
fastest exact implementation (sparse word rows) against the others at theirs (SGD's sparse rows
where recorded, Adam's and Adagrad's dense step). Claim 3 *holds* in a tier when SM3-II is
faster than Adam and Adagrad and equivalent to SGD at both batch sizes, *does not hold* when it
is decidedly slower than Adam or Adagrad, or decidedly outside ±10% of SGD, at either; claim 4
likewise with "uses less CPU than Adam and Adagrad". Otherwise *inconclusive*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sm3repro.optim.catalog import CATALOG
from sm3repro.report import time_to_target as ttt
from sm3repro.report.claims import CLAIMS, claim_by_number
from sm3repro.report.intervals import EQUIVALENCE_MARGIN, Ratio, ratio_interval, spent_alpha
from sm3repro.report.judge import INTERVALS, SUBJECT, Claim, Op, Stat, Tier, compare, verdict_of

FASTEST_EXACT = "fastest exact"
TARGET_FRACTION = 0.95
# The claims judged in interval tiers (claims.py: each tier a per-run figure) and the tiers'
# names in order of first use; a tier of one name is a row of the same matrix line-up.
TIERED: tuple[Claim, ...] = tuple(c for c in CLAIMS if c.tiers_judged_by(INTERVALS))
TIER_NAMES = tuple(dict.fromkeys(t.name for c in TIERED for t in c.tiers_judged_by(INTERVALS)))


def _tier(claim: Claim, name: str) -> Tier | None:
    return next((t for t in claim.tiers_judged_by(INTERVALS) if t.name == name), None)


@dataclass(frozen=True)
class Comparison:
    claim: int
    tier: str
    protocol: str
    implementation: str  # "dense" or FASTEST_EXACT
    batch_size: int
    other: str  # the optimizer compared with
    other_variant: str  # the variant of it that stands in this implementation
    ratio: Ratio

    @property
    def equivalence(self) -> bool:
        """SM3-II should be about level with the other (its claim's ``about``), not below it."""
        return self.other in claim_by_number(self.claim).about

    @property
    def part(self) -> bool | None:
        """Whether this comparison supports the claim (None: undecided)."""
        ratio, verdict = self.ratio, self.ratio.verdict
        if self.equivalence:  # "about as fast as SGD": equivalence, faster or slower alike
            if ratio.equivalence_p < ratio.alpha:
                return True
            if ratio.misses_a or ratio.misses_b:  # one side always misses, the other never
                return False if verdict in ("faster", "slower") else None
            margin = 1 + EQUIVALENCE_MARGIN
            return False if ratio.high < 1 / margin or ratio.low > margin else None
        return {"faster": True, "slower": False}.get(verdict)


def run_table(curves: ttt.Curves, times: pd.DataFrame) -> pd.DataFrame:
    """One row per trusted run: every tier's quantities."""
    at = times[times["fraction"] == TARGET_FRACTION].set_index("run_id")["seconds"]
    runs = curves.runs.copy()
    runs["ttt_s"] = runs["run_id"].map(at)
    runs["cpu_s_to_target"] = runs["ttt_s"] * runs["cpu_s"] / runs["runtime_s"]
    return runs


def _variant(name: str, implementation: str, protocol_runs: pd.DataFrame) -> str:
    """The variant of ``name`` that stands for it at ``implementation``: its sparse rows where
    they are its fastest exact step (the catalog's ``sparse_rows_faster``) and were recorded."""
    spec = CATALOG.get(name)
    if implementation == FASTEST_EXACT and spec is not None and spec.sparse_rows_faster:
        sparse = name + ttt.SPARSE
        if (protocol_runs["variant"] == sparse).any():
            return sparse
    return name


def subject_variant(implementation: str, protocol_runs: pd.DataFrame) -> str:
    """SM3-II's variant at ``implementation`` (dense, or its sparse rows)."""
    return _variant(SUBJECT, implementation, protocol_runs)


def comparisons(runs: pd.DataFrame) -> list[Comparison]:
    """Every (claim, tier, protocol, implementation, batch, other) comparison with data."""
    out = []
    for protocol, in_protocol in runs.groupby("protocol"):
        implementations = ["dense"]
        if (in_protocol["variant"] == SUBJECT + ttt.SPARSE).any():
            implementations.append(FASTEST_EXACT)
        for (batch, implementation, name) in [(b, i, t) for b in sorted(in_protocol["batch_size"].unique())
                                              for i in implementations for t in TIER_NAMES]:  # fmt: skip
            cell = in_protocol[in_protocol["batch_size"] == batch]
            for claim in TIERED:
                tier = _tier(claim, name)
                if tier is not None:
                    out += _compared(claim, tier, str(protocol), implementation, int(batch),
                                     cell, in_protocol)  # fmt: skip
    return out


def _compared(claim: Claim, tier: Tier, protocol: str, implementation: str, batch: int,
              cell: pd.DataFrame, in_protocol: pd.DataFrame) -> list[Comparison]:  # fmt: skip
    """SM3-II against each optimizer its claim compares it with, in one cell of one tier."""
    out = []
    mine = _series(cell, _variant(SUBJECT, implementation, in_protocol), tier.figure)
    for other in (*claim.below, *claim.about):
        variant = _variant(other, implementation, in_protocol)
        theirs = _series(cell, variant, tier.figure)
        if mine.empty or theirs.empty:
            continue
        if protocol in ttt.PAIRED:
            seeds = mine.index.intersection(theirs.index)
            # interleaved blocks may grow by seed groups (scripts/decide.py): each look
            # decides at its share of alpha
            ratio = ratio_interval(mine[seeds].to_list(), theirs[seeds].to_list(), paired=True,
                                   alpha=spent_alpha(len(seeds)))  # fmt: skip
        else:
            ratio = ratio_interval(mine.to_list(), theirs.to_list(), paired=False)
        out.append(Comparison(claim.number, tier.name, protocol, implementation, batch, other,
                              variant, ratio))  # fmt: skip
    return out


def _series(cell: pd.DataFrame, variant: str, column: str) -> pd.Series:
    values = cell[cell["variant"] == variant].set_index("seed")[column]
    return values[values.notna()]


def verdict(parts: list[bool | None]) -> str:
    """A tier's verdict from its comparisons (judge.verdict_of; *no data* without any)."""
    return verdict_of(parts, no_data="no data")


def tier_matrix(found: list[Comparison]) -> pd.DataFrame:
    """Claim x tier (x implementation) rows, one verdict column per protocol."""
    keys = sorted({(c.claim, c.tier, c.implementation) for c in found},
                  key=lambda k: (k[0], TIER_NAMES.index(k[1]), k[2] != "dense"))  # fmt: skip
    protocols = [p for p in ttt.PROTOCOLS if any(c.protocol == p for c in found)]
    rows = []
    for claim, tier, implementation in keys:
        row = {"claim": claim, "tier": tier, "implementation": implementation}
        for protocol in protocols:
            parts = [c.part for c in found if (c.claim, c.tier, c.implementation, c.protocol)
                     == (claim, tier, implementation, protocol)]  # fmt: skip
            row[protocol] = verdict(parts)
        rows.append(row)
    return pd.DataFrame(rows)


def evidence(found: list[Comparison]) -> pd.DataFrame:
    """Every comparison: its ratio with interval, verdict and what it says for the claim."""
    return pd.DataFrame([{
        "claim": c.claim, "tier": c.tier, "protocol": c.protocol,
        "implementation": c.implementation, "batch_size": c.batch_size,
        "vs": ttt.label(c.other_variant), "ratio [95% CI]": c.ratio.text(), "verdict": c.ratio.verdict,
        "supports claim": {True: "yes", False: "no", None: "undecided"}[c.part],
        "n": f"{c.ratio.n_a} vs {c.ratio.n_b}" + (" paired" if c.ratio.paired else ""),
    } for c in found])  # fmt: skip


def old_rule_disagreements(runs: pd.DataFrame, found: list[Comparison]) -> pd.DataFrame:
    """Fixed-epoch comparisons where the old rule (seed spreads overlap: undecided) and the
    interval rule say different things about "SM3-II below the other"."""
    rows = []
    for c in found:
        if c.tier != TIER_NAMES[0] or c.equivalence:  # the fixed-epoch "below" comparisons
            continue
        column = _tier(claim_by_number(c.claim), c.tier).figure  # type: ignore[union-attr]
        in_protocol = runs[(runs["protocol"] == c.protocol) & (runs["batch_size"] == c.batch_size)]
        a = _series(
            in_protocol,
            _variant(SUBJECT, c.implementation, runs[runs["protocol"] == c.protocol]),
            column,
        )
        b = _series(
            in_protocol,
            _variant(c.other, c.implementation, runs[runs["protocol"] == c.protocol]),
            column,
        )
        old = compare(Op.BELOW, _stat(a), _stat(b))
        if old != c.part:
            mark = {True: "yes", False: "no", None: "undecided"}
            rows.append({"claim": c.claim, "protocol": c.protocol,
                         "implementation": c.implementation, "batch_size": c.batch_size,
                         "vs": ttt.label(c.other_variant), "old rule (spreads)": mark[old],
                         "interval rule": mark[c.part], "ratio [95% CI]": c.ratio.text()})  # fmt: skip
    return pd.DataFrame(rows)


def _stat(values: pd.Series) -> Stat:
    finite = values[np.isfinite(values)]
    std = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
    return Stat(float(finite.mean()) if len(finite) else math.nan, std, len(finite))


def calibration_effect(runs: pd.DataFrame) -> pd.DataFrame:
    """How much of the runtime spread between runs of one cell the host calibration explains,
    per protocol: the within-cell std of log runtime before and after dividing by the run's
    calibration (ms of the fixed forward+backward), and the share of within-cell variance
    removed. Needs cells with two runs or more that were calibrated."""
    timed = runs[runs["host_ms"].notna()].copy()
    timed["log_runtime"] = np.log(timed["runtime_s"])
    timed["log_normalised"] = timed["log_runtime"] - np.log(timed["host_ms"])
    rows = []
    for protocol, in_protocol in timed.groupby("protocol"):
        cells = in_protocol.groupby(["variant", "batch_size"])
        raw = cells["log_runtime"].transform(lambda x: x - x.mean())
        normalised = cells["log_normalised"].transform(lambda x: x - x.mean())
        sizes = cells["log_runtime"].transform("size")
        keep = sizes >= 2
        if not keep.any():
            continue
        var_raw, var_norm = float((raw[keep] ** 2).mean()), float((normalised[keep] ** 2).mean())
        rows.append({
            "protocol": protocol, "runs": int(keep.sum()),
            "cells": int(in_protocol[keep].groupby(["variant", "batch_size"]).ngroups),
            "within-cell std of runtime (%)": round(100 * math.sqrt(var_raw), 1),
            "after normalising by the calibration (%)": round(100 * math.sqrt(var_norm), 1),
            "variance explained (%)": round(100 * (1 - var_norm / var_raw), 1) if var_raw else None,
        })  # fmt: skip
    return pd.DataFrame(rows)
