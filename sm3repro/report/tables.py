"""Seed means per (optimizer, batch size) and Tables I-III beside the study's numbers.

Each table is a frame of rounded numbers (what the CSV holds); :func:`display` turns it into
the strings that Markdown and LaTeX show, so all three print the same values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from sm3repro import study
from sm3repro.optim import catalog
from sm3repro.record.implementation import sm3_ran_eager
from sm3repro.report import published
from sm3repro.report.eager import EAGER_MARK
from sm3repro.report.quantities import DECIMALS, VALUES


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
    # SM3 runs whose timing enters the means (not blanked as contended) yet ran the eager path:
    # the tables mark those cells, the claims' evidence those lines (eager.EAGER_NOTE).
    eager = runs["optimizer_impl"].map(sm3_ran_eager) & runs["runtime_min"].notna()
    stats["sm3_eager"] = eager.groupby([runs["optimizer"], runs["batch_size"]]).sum()
    return stats


def _round(df: pd.DataFrame, decimals: Mapping[str, int]) -> pd.DataFrame:
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
    batches = sorted(set(study.BATCH_SIZES) | set(stats.index.get_level_values("batch_size")))
    present = stats.index.get_level_values("optimizer")
    names = catalog.ordered([*published.STUDY_NAME, *present])
    grid = pd.MultiIndex.from_product([names, batches], names=["optimizer", "batch_size"])
    rows = stats.reindex(grid).reset_index()
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
            "cpu_s_per_1k_mean",
            "cpu_s_per_1k_std",
            "runtime_min_mean",
            "runtime_min_std",
            "runtime_min_study",
            "sm3_eager",
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
        ("cpu_s_per_1k_mean", "cpu_s_per_1k_vs_adam"),
    ):
        df[out] = _vs_adam(df, col).round(DECIMALS["ratio"])
    df["sm3_eager"] = df.pop("sm3_eager").astype("Int64")  # last: a flag, not a quantity
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
        "sm3_eager",
    ]
    df = _round(df[["optimizer", "batch_size", "n", *cols]], DECIMALS)
    df["sm3_eager"] = df["sm3_eager"].astype("Int64")  # a count (reindexing made it float)
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
            out[header] = df[col].map(catalog.label)
        else:
            out[header] = df[col].map(_cell)
    return pd.DataFrame(out)


def mark_eager(shown: pd.DataFrame, table: pd.DataFrame, headers: Sequence[str]) -> pd.DataFrame:
    """``shown`` (display() of ``table``) with EAGER_MARK after the ``headers`` cells of every
    row whose timing includes a run where SM3 ran its eager path (``sm3_eager`` > 0)."""
    if not has_eager(table):
        return shown
    eager = table["sm3_eager"].fillna(0).gt(0).to_numpy(dtype=bool)
    shown = shown.copy()
    for header in headers:
        cells = shown[header]
        shown[header] = cells.where(~eager | (cells == "–"), cells + " " + EAGER_MARK)
    return shown


def has_eager(table: pd.DataFrame) -> bool:
    return "sm3_eager" in table and bool(table["sm3_eager"].fillna(0).gt(0).any())


# The timing cells a table marks when SM3 ran its eager path: what the runtime and CPU
# claims compare (ratios to Adam follow from them).
TABLE1_EAGER = ("CPU-s/1k ex (ours)", "Runtime min (ours)")
TABLE3_EAGER = ("Examples/s", "Epoch time (s)")

TABLE1_COLUMNS = {
    "Optimizer": "optimizer",
    "Study row": "study",
    "Batch": "batch_size",
    "n": "n",
    "CPU% (ours)": "cpu_percent_mean",
    "CPU% (study)": "cpu_percent_study",
    "CPU% diff": "cpu_percent_diff",
    "CPU-s/1k ex (ours)": "cpu_s_per_1k_mean",
    "Runtime min (ours)": "runtime_min_mean",
    "Runtime min (study)": "runtime_min_study",
    "Runtime diff": "runtime_min_diff",
    "Runtime/Adam (ours)": "runtime_vs_adam",
    "Runtime/Adam (study)": "runtime_vs_adam_study",
    "CPU%/Adam (ours)": "cpu_vs_adam",
    "CPU%/Adam (study)": "cpu_vs_adam_study",
    "CPU-s/1k/Adam (ours)": "cpu_s_per_1k_vs_adam",
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


def adam_state_note(table: pd.DataFrame) -> str:
    """ ", while Adam's whole state is X MB" when the table has an Adam row."""
    adam = table.loc[table["optimizer"] == "adam", "optimizer_state_bytes_mean"].dropna()
    return f", while Adam's whole state is {adam.max() / 1e6:.1f} MB" if len(adam) else ""
