"""Claims 3 and 4 by tier in the report: the fastest-exact reruns (sparse rows) join the study
protocol beside its dense runs, each tier is a row of the summary, and runs where SM3 ran its
eager path are marked wherever runtimes are compared."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from report_fixtures import write_results

from sm3repro.optim.catalog import CATALOG, sparse_rows_grid
from sm3repro.report.build import build_report
from sm3repro.report.eager import EAGER_MARK, EAGER_NOTE
from sm3repro.run.grid import grid_run_ids

TIERS_SECTION = "(#claims-3-and-4-in-tiers-with-stated-confidence)"

SPARSE = ("sm3_ii", "sm3_i", "sgd")


def test_the_second_tier_reruns_the_optimizers_whose_sparse_rows_are_fastest_and_exact() -> None:
    assert sparse_rows_grid() == SPARSE
    assert CATALOG["adagrad"].sparse_rows_exact and not CATALOG["adagrad"].sparse_rows_faster
    ids = grid_run_ids("fastest_exact", [])
    assert len(ids) == 3 * 2 * 3  # optimizers x batches x seeds
    assert {i.rsplit("-", 3)[0] for i in ids} == set(SPARSE)
    assert not set(ids) & set(grid_run_ids("paper", []))  # sparse_rows enters the run id


def _tier_rows(report: str) -> list[list[str]]:
    """The summary's rows of claims judged in tiers: [number, words, judged by, cells...]."""
    summary = report.split("## Summary\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("| ").split(" | ") for line in summary.splitlines() if line.startswith("| ")]
    return [row for row in rows[1:] if TIERS_SECTION in " ".join(row)]


def test_the_summary_shows_every_tier_and_the_sparse_reruns_join_it(tmp_path: Path) -> None:
    write_results(tmp_path, bad_runs=False)
    report = build_report(tmp_path, experiment="paper").read_text()
    assert report.index("## Summary") < report.index("## Claims 3 and 4 in tiers")
    assert "### Claims 3 and 4 by tier" not in report  # the tiers are rows of the summary
    tiers = pd.read_csv(tmp_path / "tables" / "speed_tiers.csv")
    assert set(tiers["implementation"]) == {"dense"}  # no sparse reruns yet
    rows = _tier_rows(report)
    assert [(row[0], row[2]) for row in rows] == [
        (str(claim), f"{tier} (95% intervals)") for claim, tier in tiers[["claim", "tier"]].values
    ]
    for row, study in zip(rows, tiers["study"], strict=True):  # the same verdict, linked
        assert row[3] == f"[{study}]{TIERS_SECTION}"
    # The sparse reruns: SM3-II's fastest exact implementation gets rows of its own.
    write_results(tmp_path, optimizers=SPARSE, bad_runs=False, experiment="fastest_exact")
    report = build_report(tmp_path, experiment="paper").read_text()
    tiers = pd.read_csv(tmp_path / "tables" / "speed_tiers.csv")
    assert set(tiers["implementation"]) == {"dense", "fastest exact"}
    assert len(_tier_rows(report)) == len(tiers)
    assert "fixed epochs, fastest exact (95% intervals)" in report
    assert set(tiers["tier"]) == {"fixed epochs", "time to target"}  # no phase-timed runs
    evidence = pd.read_csv(tmp_path / "tables" / "speed_tier_evidence.csv")
    exact = evidence[evidence["implementation"] == "fastest exact"]
    assert set(exact["vs"]) == {"Adam", "Adagrad", "SGD (sparse rows)"}


def test_runs_where_sm3_ran_eagerly_are_flagged_wherever_runtimes_are_compared(
    tmp_path: Path,
) -> None:
    """Records from before the fused kernel (no ``kernel=`` in optimizer_impl) ran SM3's eager
    path: Table I, Table III, the arms table, the claims' timing evidence and the tiers mark
    them and say why, while every verdict stays what the same numbers give unmarked."""
    reports, verdicts = {}, {}
    for kernel in ("fused-cpp", None):
        results = tmp_path / str(kernel)
        for experiment in ("paper", "no_dropout"):  # the study grid and an arm
            write_results(results, bad_runs=False, sm3_kernel=kernel, experiment=experiment)
        reports[kernel] = build_report(results, experiment="paper").read_text()
        verdicts[kernel] = pd.read_csv(results / "tables" / "claims.csv")["verdict"].tolist()
        verdicts[kernel] += pd.read_csv(results / "tables" / "speed_tiers.csv")["study"].tolist()
    fused, eager = reports["fused-cpp"], reports[None]
    assert EAGER_MARK not in fused
    assert verdicts[None] == verdicts["fused-cpp"]

    marked = [line for line in eager.splitlines() if EAGER_MARK in line and line != EAGER_NOTE]
    table_rows = [line for line in marked if line.startswith("| ")]
    in_summary = [line for line in table_rows if line.split("|")[1].strip().isdigit()]
    rows = [line for line in table_rows if line not in in_summary]
    # Table I, Table III and the arms table: SM3-II and SM3-I at both batches, two cells each
    assert len(rows) == 3 * 4 and all(line.count(EAGER_MARK) == 2 for line in rows)
    assert all(line.split("|")[1 + ("no_dropout" in line)].strip() in ("SM3-II", "SM3-I")
               for line in rows)  # fmt: skip
    assert "| 8.5 ± 0.04 †" in eager  # SM3-II's b64 runtime, Table I
    # the summary marks the timing claims' verdicts (seed means and tiers) and no other
    assert {line.split("|")[1].strip() for line in in_summary} == {"3", "4"}
    assert any(f"{EAGER_MARK}]{TIERS_SECTION}" in line for line in in_summary)
    evidence = [line.strip() for line in marked if not line.startswith("| ")]
    assert evidence and all(e.startswith(("- b", "- **3**", "- **4**")) for e in evidence)
    assert all(" runtime min: " in e or " CPU-s per 1k examples: " in e for e in evidence)
    # each of the summary, Table I, Table III, the arms and each judged protocol's evidence
    # says why (the study's evidence is its protocol's: the claims section does not repeat it)
    assert eager.count(EAGER_NOTE) == 6
    for name in ("table1_cpu_runtime", "table3_memory_speed", "claims"):  # and in LaTeX
        tex = (tmp_path / "None" / "tables" / f"{name}.tex").read_text()
        assert r"$^\dagger$ SM3 ran its eager path" in tex and tex.count(r"$^\dagger$") > 1
