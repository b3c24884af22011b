"""Build REPORT.md, tables (CSV, LaTeX) and figures (PNG, PDF) from the run records.

    python -m sm3repro.report --results results [--out results] [--experiment paper]

Reads ``<results>/runs/<run_id>/{summary.json,metrics.jsonl}`` (written by the training
pipeline), averages completed runs over seeds per (optimizer, batch size), puts them beside the
study's numbers (published.py) and judges the study's claims by the explicit rules below.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sm3repro.report import published

SM3 = "sm3_ii"  # our stand-in for the study's "SM3" (it never says which variant it ran)
OPTIMIZERS = ["sm3_ii", "sm3_i", "sgd", "adagrad", "adam"]  # row and legend order
LABEL = {"sm3_ii": "SM3-II", "sm3_i": "SM3-I", "sgd": "SGD", "adagrad": "Adagrad", "adam": "Adam"}
STYLE = {
    "sm3_ii": dict(color="tab:red"),
    "sm3_i": dict(color="tab:orange", linestyle="--"),
    "sgd": dict(color="tab:gray"),
    "adagrad": dict(color="tab:green"),
    "adam": dict(color="tab:blue"),
}
STUDY_BATCHES = [64, 512]

# Flattened summary.json field -> the short name used in tables and claims.
RUN_COLUMNS = {
    "final.train_loss": "train_loss",
    "final.train_accuracy": "train_accuracy",
    "final.test.las_macro": "test_las_macro",
    "final.test.uas_macro": "test_uas_macro",
    "final.test.las_micro": "test_las_micro",
    "final.test.uas_micro": "test_uas_micro",
    "resources.cpu_percent": "cpu_percent",
    "resources.runtime_min": "runtime_min",
    "resources.runtime_s": "runtime_s",
    "resources.peak_rss_mb": "peak_rss_mb",
    "resources.optimizer_state_bytes": "optimizer_state_bytes",
    "resources.n_parameters": "n_parameters",
    "resources.examples_per_s": "examples_per_s",
    "resources.epoch_time_s_mean": "epoch_time_s",
}
# Every column the report reads; a record lacking one gets NaN there instead of a crash.
RECORD_COLUMNS = [
    *["run_id", "run_dir", "optimizer", "optimizer_impl", "batch_size", "seed"],
    *["experiment", "group", *RUN_COLUMNS],
]
# Derived per run from metrics.jsonl: the epoch-1 loss (claim 1) and the loss averaged over
# all epochs, a stand-in for "converges more slowly" (claim 2).
CURVE_COLUMNS = ["train_loss_epoch1", "train_loss_mean"]
VALUES = [c for c in RUN_COLUMNS.values() if c != "runtime_s"] + CURVE_COLUMNS

# Decimals per quantity, shared by tables and claim evidence so both print the same numbers.
DECIMALS = {
    "cpu_percent": 1,
    "runtime_min": 2,
    "train_loss": 4,
    "train_loss_epoch1": 4,
    "train_loss_mean": 4,
    "train_accuracy": 4,
    "test_las_macro": 3,
    "test_uas_macro": 3,
    "test_las_micro": 3,
    "test_uas_micro": 3,
    "peak_rss_mb": 1,
    "optimizer_state_bytes": 0,
    "n_parameters": 0,
    "examples_per_s": 0,
    "epoch_time_s": 2,
    "ratio": 3,
    "pct": 2,
}

# Claim thresholds (relative differences of seed means). Printed in the report.
CLEAR = 0.05  # "clearly higher/worse": more than 5% apart (and non-overlapping spreads)
LEVEL = 0.05  # "reaches the level of": at most 5% above
SAME_SPEED = 0.10  # "about as fast as": runtimes within +-10%
NOT_WORSE = 0.01  # "as good as" / "at least as well": at most 1% worse

MACHINE_NOTE = (
    "Runtime and CPU% depend on the machine (CPU model, cores, threads, other load), so the "
    "absolute minutes and percentages are not comparable with the study's; claims 3 and 4 are "
    "judged only by the order and ratios between optimizers measured on the same machine "
    "(e.g. SM3-II runtime / Adam runtime)."
)


# ----------------------------------------------------------------------------- loading


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary file and a rename, so readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class Runs:
    """Completed runs (one row each), their per-epoch curves, and the runs left out."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    excluded: pd.DataFrame
    experiment: str | None = None
    notes: list[str] = field(default_factory=list)


def _read_summary(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    if not isinstance(summary, dict):
        raise ValueError("summary.json is not a JSON object")
    return summary


def load_runs(results_dir: Path, experiment: str | None = None) -> Runs:
    """Read every run record under ``results_dir/runs``; never raises on a bad record."""
    kept, excluded, notes = [], [], []
    run_dirs = sorted(p for p in (Path(results_dir) / "runs").glob("*") if p.is_dir())
    for run_dir in run_dirs:
        try:
            summary = _read_summary(run_dir)
        except (OSError, ValueError) as err:  # missing, truncated or not JSON
            excluded.append(
                dict(run_id=run_dir.name, status="unreadable", reason=f"summary.json: {err}")
            )
            continue
        status = summary.get("status")
        if status != "completed":
            reason = summary.get("reason") or ""
            excluded.append(
                dict(run_id=summary.get("run_id", run_dir.name), status=str(status), reason=reason)
            )
            continue
        if not summary.get("optimizer") or summary.get("batch_size") is None:
            excluded.append(
                dict(run_id=run_dir.name, status="unreadable", reason="no optimizer/batch_size")
            )
            continue
        summary.setdefault("run_id", run_dir.name)
        summary["run_dir"] = str(run_dir)
        kept.append(summary)

    runs = pd.json_normalize(kept)
    runs = runs.reindex(columns=runs.columns.union(RECORD_COLUMNS, sort=False))  # tolerate gaps
    runs["experiment"] = runs["experiment"].fillna(runs.get("group")).fillna("default")
    runs = runs.astype({"run_id": "str", "run_dir": "str", "optimizer": "str", "experiment": "str"})

    # One experiment at a time: a smoke sweep and the paper grid must not be averaged together.
    experiments = runs["experiment"].value_counts()
    if experiment is None and len(experiments) > 1:
        experiment = "paper" if "paper" in experiments else str(experiments.index[0])
        notes.append(
            f"Several experiments in the results ({', '.join(experiments.index)}); reporting `{experiment}` (choose with --experiment)."
        )
    if experiment is not None:
        other = runs["experiment"] != experiment
        excluded += [
            dict(run_id=r, status="other experiment", reason=f"experiment {e}")
            for r, e in runs.loc[other, ["run_id", "experiment"]].itertuples(index=False)
        ]
        runs = runs[~other]

    # A repeated (optimizer, batch, seed) would count twice in the mean: keep the latest.
    order = "provenance.finished_at" if "provenance.finished_at" in runs else "run_id"
    runs = runs.sort_values(order, na_position="first")
    dup = runs.duplicated(["optimizer", "batch_size", "seed"], keep="last")
    excluded += [
        dict(
            run_id=r,
            status="duplicate",
            reason="same optimizer, batch size and seed as a later run",
        )
        for r in runs.loc[dup, "run_id"]
    ]
    runs = runs[~dup].rename(columns=RUN_COLUMNS)
    runs["batch_size"] = runs["batch_size"].astype("int64")
    runs["runtime_min"] = runs["runtime_min"].fillna(runs["runtime_s"] / 60)

    curves = []
    for run_id, run_dir in runs[["run_id", "run_dir"]].itertuples(index=False):
        try:
            metrics = pd.read_json(Path(run_dir) / "metrics.jsonl", lines=True)
        except (OSError, ValueError) as err:
            notes.append(f"`{run_id}`: metrics.jsonl unreadable ({err}); no curves for this run.")
            continue
        if "kind" in metrics and "epoch" in metrics:
            curves.append(metrics[metrics["kind"] == "epoch"].assign(run_id=run_id))
    curves = (
        pd.concat(curves, ignore_index=True)
        if curves
        else pd.DataFrame({"run_id": pd.Series(dtype="str")})
    )
    curves = curves.reindex(columns=curves.columns.union(["epoch", "train_loss"], sort=False))
    keys = runs[["run_id", "optimizer", "batch_size", "seed"]]
    curves = curves.drop(columns=["optimizer", "batch_size", "seed"], errors="ignore").merge(
        keys, on="run_id"
    )
    # a resumed run may log an epoch twice: the later row wins
    curves = curves.sort_values(["run_id", "epoch"]).drop_duplicates(
        ["run_id", "epoch"], keep="last"
    )

    # Per-run curve summaries; the final loss falls back to the last epoch's if missing.
    per_run = curves.groupby("run_id")["train_loss"].agg(
        train_loss_epoch1="first", train_loss_mean="mean", train_loss_last="last"
    )
    runs = runs.merge(per_run, how="left", left_on="run_id", right_index=True)
    runs["train_loss"] = runs["train_loss"].fillna(runs["train_loss_last"])

    excluded = pd.DataFrame(excluded, columns=["run_id", "status", "reason"])
    return Runs(runs.reset_index(drop=True), curves, excluded, experiment, notes)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (NaN for one seed) and n over seeds per (optimizer, batch_size)."""
    groups = runs.groupby(["optimizer", "batch_size"])
    stats = groups[VALUES].agg(["mean", "std"])
    stats.columns = [f"{col}_{stat}" for col, stat in stats.columns]
    stats.insert(0, "n", groups.size())
    # which code ran (e.g. fused torch Adam vs ours), so speed comparisons can be read fairly
    stats["optimizer_impl"] = groups["optimizer_impl"].agg(
        lambda s: ", ".join(s.dropna().astype(str).unique())
    )
    return stats


# ----------------------------------------------------------------------------- tables


def _round(df: pd.DataFrame, decimals: dict[str, int]) -> pd.DataFrame:
    """Round columns by prefix; 0 decimals become nullable integers (no trailing '.0')."""
    df = df.copy()
    for col in df.columns:
        base = next((k for k in sorted(decimals, key=len, reverse=True) if col.startswith(k)), None)
        if base is None or not pd.api.types.is_float_dtype(df[col]):
            continue
        df[col] = df[col].round(decimals[base])
        if decimals[base] == 0:
            df[col] = df[col].astype("Int64")
    return df


def _rows(stats: pd.DataFrame) -> pd.DataFrame:
    """The (optimizer, batch_size) rows to show: the study's grid plus whatever was run."""
    batches = sorted(set(STUDY_BATCHES) | set(stats.index.get_level_values("batch_size")))
    grid = pd.MultiIndex.from_product([OPTIMIZERS, batches], names=["optimizer", "batch_size"])
    extra = stats.index.difference(grid)  # optimizers outside the study's five, if any
    rows = stats.reindex(grid.append(extra)).reset_index()
    rows.insert(1, "study", rows["optimizer"].map(published.STUDY_NAME))
    rows["n"] = rows["n"].fillna(0).astype("int64")
    return rows.sort_values(["batch_size"], kind="stable").reset_index(drop=True)


def _vs_adam(df: pd.DataFrame, col: str) -> pd.Series:
    adam = df[df["optimizer"] == "adam"].set_index("batch_size")[col]
    return df[col] / df["batch_size"].map(adam)


def table1(stats: pd.DataFrame) -> pd.DataFrame:
    """CPU% and runtime (ours, mean/std over seeds) beside the study's Table I."""
    df = _rows(stats)
    study = published.TABLE1.rename(
        columns={"cpu_percent": "cpu_percent_study", "runtime_min": "runtime_min_study"}
    )
    df = df.merge(study, how="left", on=["optimizer", "batch_size"])
    df = df[
        [
            "optimizer",
            "study",
            "batch_size",
            "n",
            "cpu_percent_mean",
            "cpu_percent_std",
            "cpu_percent_study",
            "runtime_min_mean",
            "runtime_min_std",
            "runtime_min_study",
        ]
    ]
    df = _round(df, DECIMALS)  # differences and ratios are taken from the printed numbers
    for col in ("cpu_percent", "runtime_min"):
        df.insert(
            df.columns.get_loc(f"{col}_study") + 1,
            f"{col}_diff",
            (df[f"{col}_mean"] - df[f"{col}_study"]).round(DECIMALS[col]),
        )
    for col, out in (
        ("runtime_min_mean", "runtime_vs_adam"),
        ("runtime_min_study", "runtime_vs_adam_study"),
        ("cpu_percent_mean", "cpu_vs_adam"),
        ("cpu_percent_study", "cpu_vs_adam_study"),
    ):
        df[out] = _vs_adam(df, col).round(DECIMALS["ratio"])
    return df[df["n"].gt(0) | df["cpu_percent_study"].notna()].reset_index(drop=True)


def table2(stats: pd.DataFrame) -> pd.DataFrame:
    """Test LAS/UAS of the final model (macro as in the study, plus micro) beside Table II."""
    df = _rows(stats)
    study = published.TABLE2.rename(columns=lambda c: f"{c}_study" if c.startswith("test") else c)
    df = df.merge(study, how="left", on="optimizer")
    metrics = ["test_las_macro", "test_uas_macro", "test_las_micro", "test_uas_micro"]
    cols = [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    df = _round(
        df[
            [
                "optimizer",
                "study",
                "batch_size",
                "n",
                *cols,
                "test_las_macro_study",
                "test_uas_macro_study",
            ]
        ],
        DECIMALS,
    )
    for m in ("test_las_macro", "test_uas_macro"):
        df[f"{m}_diff"] = (df[f"{m}_mean"] - df[f"{m}_study"]).round(DECIMALS[m])
    order = ["optimizer", "study", "batch_size", "n"]
    for m in metrics:
        order += [f"{m}_mean", f"{m}_std"] + ([f"{m}_study", f"{m}_diff"] if "macro" in m else [])
    return df.loc[df["n"].gt(0) | df["test_las_macro_study"].notna(), order].reset_index(drop=True)


def table3(stats: pd.DataFrame) -> pd.DataFrame:
    """Beyond the study: optimizer state, peak RSS and throughput."""
    df = _rows(stats)
    df = df[df["n"] > 0]
    cols = [
        "n_parameters_mean",
        "optimizer_state_bytes_mean",
        "peak_rss_mb_mean",
        "peak_rss_mb_std",
        "examples_per_s_mean",
        "examples_per_s_std",
        "epoch_time_s_mean",
        "epoch_time_s_std",
        "optimizer_impl",
    ]
    df = _round(df[["optimizer", "batch_size", "n", *cols]], DECIMALS)
    pct = 100 * _vs_adam(df, "optimizer_state_bytes_mean").astype("float64")
    df.insert(
        df.columns.get_loc("optimizer_state_bytes_mean") + 1,
        "state_pct_of_adam",
        pct.round(DECIMALS["pct"]),
    )
    return df.reset_index(drop=True)


def _cell(x: Any) -> str:
    """A number exactly as to_csv writes it (shortest repr), '–' when missing."""
    return "–" if pd.isna(x) else str(x)


def _pm(mean: Any, std: Any) -> str:
    if pd.isna(mean):
        return "–"
    return _cell(mean) if pd.isna(std) else f"{_cell(mean)} ± {_cell(std)}"


def display(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Strings for Markdown/LaTeX from the same rounded frame the CSV holds.

    ``columns`` maps a header to a column; a column ending in ``_mean`` is shown as
    ``mean ± std`` with its ``_std`` sibling.
    """
    out = {}
    for header, col in columns.items():
        if col.endswith("_mean") and col.replace("_mean", "_std") in df:
            std = df[col.replace("_mean", "_std")]
            out[header] = [_pm(m, s) for m, s in zip(df[col], std, strict=True)]
        elif col == "optimizer":
            out[header] = df[col].map(lambda o: LABEL.get(o, o))
        else:
            out[header] = df[col].map(_cell)
    return pd.DataFrame(out)


TABLE1_COLUMNS = {
    "Optimizer": "optimizer",
    "Study row": "study",
    "Batch": "batch_size",
    "n": "n",
    "CPU% (ours)": "cpu_percent_mean",
    "CPU% (study)": "cpu_percent_study",
    "CPU% diff": "cpu_percent_diff",
    "Runtime min (ours)": "runtime_min_mean",
    "Runtime min (study)": "runtime_min_study",
    "Runtime diff": "runtime_min_diff",
    "Runtime/Adam (ours)": "runtime_vs_adam",
    "Runtime/Adam (study)": "runtime_vs_adam_study",
    "CPU%/Adam (ours)": "cpu_vs_adam",
    "CPU%/Adam (study)": "cpu_vs_adam_study",
}
TABLE2_COLUMNS = {
    "Optimizer": "optimizer",
    "Study row": "study",
    "Batch": "batch_size",
    "n": "n",
    "LAS macro (ours)": "test_las_macro_mean",
    "LAS macro (study)": "test_las_macro_study",
    "LAS diff": "test_las_macro_diff",
    "UAS macro (ours)": "test_uas_macro_mean",
    "UAS macro (study)": "test_uas_macro_study",
    "UAS diff": "test_uas_macro_diff",
    "LAS micro (ours)": "test_las_micro_mean",
    "UAS micro (ours)": "test_uas_micro_mean",
}
TABLE3_COLUMNS = {
    "Optimizer": "optimizer",
    "Batch": "batch_size",
    "n": "n",
    "Parameters": "n_parameters_mean",
    "Optimizer state (bytes)": "optimizer_state_bytes_mean",
    "State % of Adam's": "state_pct_of_adam",
    "Peak RSS (MB)": "peak_rss_mb_mean",
    "Examples/s": "examples_per_s_mean",
    "Epoch time (s)": "epoch_time_s_mean",
    "Implementation": "optimizer_impl",
}


def _adam_state_note(table: pd.DataFrame) -> str:
    """ ", while Adam's whole state is X MB" when the table has an Adam row."""
    adam = table.loc[table["optimizer"] == "adam", "optimizer_state_bytes_mean"].dropna()
    return f", while Adam's whole state is {adam.max() / 1e6:.1f} MB" if len(adam) else ""


# ----------------------------------------------------------------------------- claims


@dataclass
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


MARK = {True: "yes", False: "no", None: "undecided"}


class Judge:
    """Collects the three-valued parts of one claim and turns them into a verdict."""

    def __init__(self, stats: pd.DataFrame) -> None:
        self.stats = stats
        self.results: list[bool | None] = []
        self.lines: list[str] = []
        self.missing: list[str] = []
        self.ns: list[int] = []

    def _stat(self, opt: str, bs: int, col: str) -> Stat | None:
        if (opt, bs) not in self.stats.index:
            self.missing.append(f"{opt}@{bs}")
            return None
        row = self.stats.loc[(opt, bs)]
        if pd.isna(row[f"{col}_mean"]):
            self.missing.append(f"{col} of {opt}@{bs}")
            return None
        std = row[f"{col}_std"]
        return Stat(float(row[f"{col}_mean"]), 0.0 if pd.isna(std) else float(std), int(row["n"]))

    def check(
        self, what: str, col: str, bs: int, kind: str, b: str, a: str = SM3, rel: float = 0.0
    ) -> None:
        sa, sb = self._stat(a, bs, col), self._stat(b, bs, col)
        if sa is None or sb is None:
            return
        ok = compare(kind, sa, sb, rel)
        d = DECIMALS[col]
        fmt = lambda s: f"{s.mean:.{d}f} ± {s.std:.{d}f}"  # noqa: E731
        self.results.append(ok)
        self.ns += [sa.n, sb.n]
        self.lines.append(
            f"b{bs} {what}: {LABEL[a]} {fmt(sa)} {_symbol(kind, rel)} {LABEL[b]} {fmt(sb)} ({_rel(sa.mean, sb.mean):+.1%}): {MARK[ok]}"
        )

    def verdict(self) -> str:
        if self.missing:
            return f"inconclusive (no data for {', '.join(dict.fromkeys(self.missing))})"
        if any(r is False for r in self.results):
            verdict = "does not hold"
        elif any(r is None for r in self.results):
            verdict = "inconclusive"
        else:
            verdict = "holds"
        return verdict + (" (n=1: no seed spread, judged on means)" if min(self.ns) == 1 else "")


def _claim1(j: Judge) -> None:
    for other in ("adam", "adagrad"):
        j.check("epoch-1 train loss", "train_loss_epoch1", 64, ">>", other, rel=CLEAR)
    j.check("final train loss", "train_loss", 64, "<~", "adagrad", rel=LEVEL)
    j.check("final train loss", "train_loss", 64, "<", "adam")


def _claim2(j: Judge) -> None:
    for other in ("adam", "adagrad"):
        j.check("final train loss", "train_loss", 512, ">>", other, rel=CLEAR)
        j.check("train loss averaged over epochs", "train_loss_mean", 512, ">", other)


def _claim3(j: Judge) -> None:
    for bs in STUDY_BATCHES:
        j.check("runtime min", "runtime_min", bs, "<", "adam")
        j.check("runtime min", "runtime_min", bs, "<", "adagrad")
        j.check("runtime min", "runtime_min", bs, "~", "sgd", rel=SAME_SPEED)


def _claim4(j: Judge) -> None:
    for bs in STUDY_BATCHES:
        for other in ("adam", "adagrad"):
            j.check("CPU%", "cpu_percent", bs, "<", other)


def _claim5(j: Judge) -> None:
    for bs in STUDY_BATCHES:
        for col, what in (
            ("test_las_macro", "test LAS macro"),
            ("test_uas_macro", "test UAS macro"),
        ):
            j.check(what, col, bs, ">~", "sgd", rel=NOT_WORSE)
            j.check(what, col, bs, ">~", "adagrad", rel=NOT_WORSE)
            j.check(what, col, bs, "<", "adam")


def _claim6(j: Judge) -> None:
    for bs in STUDY_BATCHES:
        for col, what in (
            ("optimizer_state_bytes", "optimizer state bytes"),
            ("peak_rss_mb", "peak RSS MB"),
        ):
            for other in ("adam", "adagrad"):
                j.check(what, col, bs, "<", other)


def _claim7(j: Judge) -> None:
    for bs in STUDY_BATCHES:
        j.check("final train loss", "train_loss", bs, "<~", "sm3_i", rel=NOT_WORSE)
        j.check("final train accuracy", "train_accuracy", bs, ">~", "sm3_i", rel=NOT_WORSE)
        j.check("test LAS macro", "test_las_macro", bs, ">~", "sm3_i", rel=NOT_WORSE)


# Each claim: (the rule in words, with its thresholds; the code that applies it).
CLAIM_RULES: dict[int, tuple[str, Callable[[Judge], None]]] = {
    1: (
        f"Batch 64. Epoch-1 train loss of SM3-II above Adam's and Adagrad's by >{CLEAR:.0%} "
        f"(clearly higher early); final-epoch train loss at most {LEVEL:.0%} above Adagrad's "
        "(reaches its level) and below Adam's.",
        _claim1,
    ),
    2: (
        f"Batch 512. Final-epoch train loss of SM3-II above Adam's and Adagrad's by >{CLEAR:.0%} "
        "(clearly worse), and its train loss averaged over all epochs above theirs (slower).",
        _claim2,
    ),
    3: (
        "Batch 64 and 512, same machine. Runtime of SM3-II below Adam's and Adagrad's, and "
        f"within ±{SAME_SPEED:.0%} of SGD's. Judged by ratios, not absolute minutes.",
        _claim3,
    ),
    4: (
        "Batch 64 and 512, same machine. Process CPU% of SM3-II below Adam's and Adagrad's "
        "(judged by order/ratio, not absolute %).",
        _claim4,
    ),
    5: (
        "Batch 64 and 512. Test macro LAS and UAS (final model) of SM3-II at least SGD's and "
        f"Adagrad's minus {NOT_WORSE:.0%} (relative), and below Adam's.",
        _claim5,
    ),
    6: (
        "Batch 64 and 512. Optimizer state bytes and peak RSS of SM3-II below Adam's and "
        "Adagrad's.",
        _claim6,
    ),
    7: (
        "Batch 64 and 512. SM3-II vs SM3-I: final train loss at most "
        f"{NOT_WORSE:.0%} higher, final train accuracy and test macro LAS at most "
        f"{NOT_WORSE:.0%} lower.",
        _claim7,
    ),
}

CLAIM_LEGEND = (
    "How the rules decide: quantities are seed means ± std. A strict comparison (<, >) counts "
    'only when the two spreads do not overlap, else it is *undecided*. "Clearly" (> by x%) '
    "also needs the means more than x% apart. A tolerance comparison (≤ +x%, ≥ -x%, ≈ ±x%) "
    "holds when the means are within the tolerance and fails only when outside it with "
    "non-overlapping spreads. Verdict: *does not hold* if any part fails, else *inconclusive* "
    "if any part is undecided or data is missing, else *holds*. With one seed (n=1) there is "
    "no spread: std is 0 and the means decide."
)


def judge_claims(stats: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: statement, rule, verdict and the numbers behind it."""
    rows = []
    for num, (rule, apply) in CLAIM_RULES.items():
        judge = Judge(stats)
        apply(judge)
        rows.append(
            dict(
                claim=num,
                statement=published.CLAIMS[num],
                rule=rule,
                verdict=judge.verdict(),
                evidence="; ".join(judge.lines),
            )
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures


def _save(fig: Figure, path_stem: Path) -> list[Path]:
    FigureCanvasAgg(fig)  # render with Agg, without touching pyplot's global backend
    paths = []
    for ext in ("png", "pdf"):
        path = path_stem.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.name}.tmp")
        # No creation date in the PDF: regenerating the same report leaves the files unchanged.
        metadata = {"CreationDate": None} if ext == "pdf" else None
        fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight", metadata=metadata)
        os.replace(tmp, path)  # readers never see a half-written figure
        paths.append(path)
    return paths


def plot_curves(
    curves: pd.DataFrame, metrics: dict[str, str], title: str, path_stem: Path
) -> list[Path]:
    """One panel per (metric, batch size): seed-mean line with a ±std band per optimizer."""
    batches = sorted(curves["batch_size"].unique()) or STUDY_BATCHES
    fig = Figure(figsize=(5 * len(batches), 3.6 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), len(batches), squeeze=False)
    for row, (col, ylabel) in enumerate(metrics.items()):
        stats = (
            curves.groupby(["optimizer", "batch_size", "epoch"])[col].agg(["mean", "std"])
            if col in curves
            else None
        )
        for ax, bs in zip(axes[row], batches, strict=True):
            for opt in OPTIMIZERS:
                if stats is None or (opt, bs) not in stats.index.droplevel("epoch"):
                    continue
                s = stats.loc[(opt, bs)].dropna(subset=["mean"])
                std = s["std"].fillna(0)  # one seed: no band
                ax.plot(
                    s.index, s["mean"], marker="o", markersize=3, label=LABEL[opt], **STYLE[opt]
                )
                ax.fill_between(
                    s.index, s["mean"] - std, s["mean"] + std, alpha=0.15, color=STYLE[opt]["color"]
                )
            if not ax.lines:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            ax.set(title=f"batch {bs}", xlabel="epoch", ylabel=ylabel)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
    handles = {}  # one legend for all panels: label -> first line drawn with it
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside right center")
    fig.suptitle(title)
    return _save(fig, path_stem)


# ----------------------------------------------------------------------------- report


def _unique(runs: pd.DataFrame, col: str) -> str:
    if col not in runs:
        return "not recorded"
    values = runs[col].dropna().astype(str).unique()
    return ", ".join(values) if len(values) else "not recorded"


# pdflatex has no glyphs for these without extra packages; < and > print as other characters.
LATEX_SYMBOLS = str.maketrans(
    {
        "±": r"$\pm$",
        "≤": r"$\le$",
        "≥": r"$\ge$",
        "≈": r"$\approx$",
        "–": "--",
        "<": "$<$",
        ">": "$>$",
    }
)


def _markdown(df: pd.DataFrame) -> str:
    # disable_numparse: tabulate would otherwise reformat the numbers (e.g. 9.0 -> 9)
    return df.to_markdown(index=False, disable_numparse=True)


def _provenance(runs: pd.DataFrame) -> str:
    lines = [
        f"- CPU model: {_unique(runs, 'provenance.cpu_model')}",
        f"- CPU count: {_unique(runs, 'provenance.cpu_count')}; usable cores: {_unique(runs, 'resources.usable_cores')}; torch threads: {_unique(runs, 'resources.torch_threads')}",
        f"- Platform: {_unique(runs, 'provenance.platform')}; Python: {_unique(runs, 'provenance.python')}",
        f"- Git commit: {_unique(runs, 'provenance.git_commit')} (dirty: {_unique(runs, 'provenance.git_dirty')})",
    ]
    packages = sorted(c for c in runs.columns if c.startswith("provenance.packages."))
    if packages:
        lines.append(
            "- Packages: "
            + "; ".join(f"{c.rsplit('.', 1)[-1]} {_unique(runs, c)}" for c in packages)
        )
    checksums = sorted(c for c in runs.columns if c.startswith("data.checksums."))
    lines += ["", "Data checksums (sha256):", ""] + [
        f"- {c.rsplit('.', 1)[-1]}: `{_unique(runs, c)}`" for c in checksums
    ]
    commands = (
        sorted(runs["provenance.command"].dropna().unique()) if "provenance.command" in runs else []
    )
    lines += (
        ["", "Commands (from provenance):", "", "```", *commands, "```"] if len(commands) else []
    )
    return "\n".join(lines)


def _evidence(num: int, verdict: str, evidence: str) -> str:
    lines = [f"  - {line}" for line in evidence.split("; ") if line]
    return "\n".join([f"- **Claim {num}**: {verdict}", *lines])


def render_markdown(
    loaded: Runs, tables: dict[str, pd.DataFrame], figures: dict[str, Path], claims_md: pd.DataFrame
) -> str:
    runs, excluded = loaded.runs, loaded.excluded
    data_name = _unique(runs, "data.name")
    epochs = _unique(runs, "epochs_completed")
    seeds = _unique(runs.sort_values("seed"), "seed")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = [
        "# SM3 reproduction report",
        "",
        f"Reproduction of {published.CITATION}: a Chen & Manning feed-forward dependency parser "
        "trained with SM3 (both variants), SGD, Adagrad and Adam at batch sizes 64 and 512.",
        "",
        f"Generated {now} from {len(runs)} completed run(s) (experiment `{loaded.experiment or _unique(runs, 'experiment')}`; "
        f"seeds {seeds}; epochs {epochs}); {len(excluded)} run(s) excluded (listed below). "
        "Our values are mean ± std over seeds (n seeds); the std is blank with one seed.",
        "",
        f"**Data.** Our runs use `{data_name}` (train sentences: {_unique(runs, 'data.train_sentences')}). "
        f"The study used {published.DATASET}, while default runs here use UD English-EWT, so "
        "absolute LAS/UAS (and runtimes) are not expected to match; compare the optimizers' order. "
        "All scores are fractions in [0, 1].",
        "",
        f"**Machine.** {MACHINE_NOTE}",
        "",
        "SM3 in the study is our SM3-II (`sm3_ii`, the variant every public implementation has); "
        "SM3-I (`sm3_i`) is shown as an extra row.",
        "",
        "## Table I: CPU usage and runtime (training)",
        "",
        _markdown(display(tables["table1_cpu_runtime"], TABLE1_COLUMNS)),
        "",
        "Diff = ours - study. Runtime/Adam and CPU%/Adam are ratios to Adam at the same batch "
        "size; these, not the absolute values, are what carries over between machines.",
        "",
        "## Table II: test LAS / UAS (final model)",
        "",
        _markdown(display(tables["table2_las_uas"], TABLE2_COLUMNS)),
        "",
        "The study reports macro (sentence-averaged) LAS/UAS and does not say which batch size "
        "Table II used, so its numbers are shown beside both. Micro = token-averaged.",
        "",
        "## Table III: memory and speed (beyond the study)",
        "",
        _markdown(display(tables["table3_memory_speed"], TABLE3_COLUMNS)),
        "",
        "Optimizer state bytes count the optimizer's state tensors; peak RSS is the process's "
        "resident-memory high-water mark during training (reset at the start of each run; "
        "includes PyTorch and the data). Runs of a sweep share one process, so peak RSS also "
        "carries that process's heap history (e.g. memory kept from featurizing the data in its "
        "first run): differences of ~10 MB between optimizers are within that noise"
        + _adam_state_note(tables["table3_memory_speed"])
        + ".",
        "",
        "## Fig. 1: training loss per epoch",
        "",
        f"![Training loss per epoch]({figures['fig1_train_loss'].as_posix()})",
        "",
        "Seed mean with a ±std band; one panel per batch size.",
        "",
        "## Dev attachment scores per epoch",
        "",
        f"![Dev LAS/UAS per epoch]({figures['fig_dev_attachment'].as_posix()})",
        "",
        "Macro (sentence-averaged) LAS and UAS on the dev set after each epoch, as in the "
        "study's Table II metric.",
        "",
        "## Claims",
        "",
        CLAIM_LEGEND,
        "",
        f"Thresholds: clearly = >{CLEAR:.0%}; reaches the level = at most +{LEVEL:.0%}; about as "
        f"fast = within ±{SAME_SPEED:.0%}; as good as = at most {NOT_WORSE:.0%} worse. {MACHINE_NOTE}",
        "",
        _markdown(claims_md.drop(columns="Numbers (ours)")),
        "",
        "Numbers behind each verdict (ours, mean ± std over seeds; relative difference in brackets):",
        "",
        *[
            _evidence(num, verdict, evidence)
            for num, verdict, evidence in claims_md[["#", "Verdict", "Numbers (ours)"]].itertuples(
                index=False
            )
        ],
        "",
        "## Excluded runs",
        "",
        _markdown(excluded) if len(excluded) else "None.",
        "",
        "## Machine, software and data",
        "",
        _provenance(runs),
    ]
    if loaded.notes:
        md += ["", "## Notes", "", *[f"- {note}" for note in loaded.notes]]
    return "\n".join(md) + "\n"


def build_report(
    results_dir: Path,
    out_dir: Path | None = None,
    tracker: Any = None,
    experiment: str | None = None,
) -> Path:
    """Write REPORT.md, tables/ and figures/ under ``out_dir`` (default ``results_dir``).

    ``tracker``, if given, receives the tables, figures and verdicts (log_table, log_image,
    log_summary); the caller owns it and calls finish().
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)

    loaded = load_runs(results_dir, experiment)
    stats = aggregate(loaded.runs)
    tables = {
        "table1_cpu_runtime": table1(stats),
        "table2_las_uas": table2(stats),
        "table3_memory_speed": table3(stats),
        "claims": judge_claims(stats),
    }
    claims_md = tables["claims"].rename(
        columns={
            "claim": "#",
            "statement": "Claim (study)",
            "rule": "Rule",
            "verdict": "Verdict",
            "evidence": "Numbers (ours)",
        }
    )
    claims_md = claims_md[["#", "Claim (study)", "Rule", "Verdict", "Numbers (ours)"]]
    displays = {
        "table1_cpu_runtime": (
            display(tables["table1_cpu_runtime"], TABLE1_COLUMNS),
            "CPU usage and runtime (ours vs the study's Table I)",
        ),
        "table2_las_uas": (
            display(tables["table2_las_uas"], TABLE2_COLUMNS),
            "Test LAS/UAS (ours vs the study's Table II)",
        ),
        "table3_memory_speed": (
            display(tables["table3_memory_speed"], TABLE3_COLUMNS),
            "Optimizer memory and speed (beyond the study)",
        ),
        "claims": (claims_md, "The study's claims and our verdicts"),
    }
    for name, df in tables.items():
        _write_text(out_dir / "tables" / f"{name}.csv", df.to_csv(index=False))
        shown, caption = displays[name]
        fmt = "rp{4cm}p{4cm}p{2.5cm}p{6cm}" if name == "claims" else None
        tex = shown.to_latex(
            index=False, escape=True, caption=caption, label=f"tab:{name}", column_format=fmt
        )
        _write_text(out_dir / "tables" / f"{name}.tex", tex.translate(LATEX_SYMBOLS))
    _write_text(out_dir / "tables" / "excluded_runs.csv", loaded.excluded.to_csv(index=False))

    curves = loaded.curves
    plot_curves(
        curves,
        {"train_loss": "training loss"},
        "Training loss per epoch (mean ± std over seeds)",
        out_dir / "figures" / "fig1_train_loss",
    )
    plot_curves(
        curves,
        {"dev_las_macro": "dev LAS (macro)", "dev_uas_macro": "dev UAS (macro)"},
        "Dev attachment scores per epoch (macro, mean ± std over seeds)",
        out_dir / "figures" / "fig_dev_attachment",
    )
    figures = {
        name: Path("figures") / f"{name}.png" for name in ("fig1_train_loss", "fig_dev_attachment")
    }

    report = out_dir / "REPORT.md"
    _write_text(report, render_markdown(loaded, tables, figures, claims_md))

    if tracker is not None:
        for name, df in tables.items():
            tracker.log_table(name, df)
        tracker.log_table("excluded_runs", loaded.excluded)
        for name, rel in figures.items():
            tracker.log_image(name, out_dir / rel)
        verdicts = {
            f"claim{c}": v
            for c, v in tables["claims"][["claim", "verdict"]].itertuples(index=False)
        }
        tracker.log_summary(
            {"runs_completed": len(loaded.runs), "runs_excluded": len(loaded.excluded), **verdicts}
        )
    return report


# ----------------------------------------------------------------------------- CLI


def _make_tracker(out_dir: Path, experiment: str | None) -> Any:
    """A W&B tracker via sm3repro.tracking, if that module is there (imported lazily)."""
    try:
        from omegaconf import OmegaConf

        from sm3repro.tracking import make_tracker
    except ImportError as err:
        sys.exit(
            f"--wandb needs sm3repro.tracking, which could not be imported ({err}). Rerun without --wandb."
        )
    from sm3repro.paths import config_dir

    logger_cfg = OmegaConf.load(config_dir() / "logger" / "wandb.yaml")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return make_tracker(
        logger_cfg, run_name=f"report-{stamp}", run_id=f"report-{stamp}", config={"results": str(out_dir), "experiment": experiment},
        group=experiment or "report", tags=["report"], directory=str(logger_cfg.get("dir", ".")),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sm3repro.report",
        description="Build REPORT.md, tables and figures from results/runs/.",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(os.environ.get("SM3REPRO_RESULTS", "results")),
        help="folder holding runs/ (default: results)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where REPORT.md, tables/ and figures/ go (default: --results)",
    )
    parser.add_argument(
        "--experiment",
        default=None,
        help="report only this experiment (default: the only one, else 'paper')",
    )
    parser.add_argument(
        "--wandb", action="store_true", help="also log tables and figures via sm3repro.tracking"
    )
    args = parser.parse_args(argv)

    if not (args.results / "runs").is_dir():
        sys.exit(
            f"no run records: {args.results / 'runs'} does not exist (train first, or pass --results)"
        )
    tracker = _make_tracker(args.out or args.results, args.experiment) if args.wandb else None
    try:
        report = build_report(args.results, args.out, tracker=tracker, experiment=args.experiment)
    finally:
        if tracker is not None:
            tracker.finish()
    claims = pd.read_csv(report.parent / "tables" / "claims.csv")
    for num, verdict in claims[["claim", "verdict"]].itertuples(index=False):
        print(f"claim {num}: {verdict}")
    print(f"wrote {report}")
