"""Claims 3 and 4 by tier in the report: the fastest-exact reruns (sparse rows) join the study
protocol beside its dense runs, the tier matrix opens the claims, and runs where SM3 ran its
eager path are marked wherever runtimes are compared."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from report_fixtures import write_results

from sm3repro.optim.catalog import CATALOG, sparse_rows_grid
from sm3repro.report.build import build_report
from sm3repro.report.experiment import grid_run_ids
from sm3repro.report.timing import EAGER_MARK, EAGER_NOTE

SPARSE = ("sm3_ii", "sm3_i", "sgd")


def test_the_second_tier_reruns_the_optimizers_whose_sparse_rows_are_fastest_and_exact() -> None:
    assert sparse_rows_grid() == SPARSE
    assert CATALOG["adagrad"].sparse_rows_exact and not CATALOG["adagrad"].sparse_rows_faster
    ids = grid_run_ids("fastest_exact", [])
    assert len(ids) == 3 * 2 * 3  # optimizers x batches x seeds
    assert {i.rsplit("-", 3)[0] for i in ids} == set(SPARSE)
    assert not set(ids) & set(grid_run_ids("paper", []))  # sparse_rows enters the run id


def test_the_report_opens_the_claims_with_the_tier_matrix_and_the_sparse_reruns_join_it(
    tmp_path: Path,
) -> None:
    write_results(tmp_path, bad_runs=False)
    report = build_report(tmp_path, experiment="paper").read_text()
    claims = report.index("## Claims")
    assert report.index("### Claims 3 and 4 by tier") > claims
    assert "### Claim 3 in two tiers" not in report  # folded into the tiers
    tiers = pd.read_csv(tmp_path / "tables" / "speed_tiers.csv")
    assert set(tiers["implementation"]) == {"dense"}  # no sparse reruns yet
    # The sparse reruns: SM3-II's fastest exact implementation gets rows of its own.
    write_results(tmp_path, optimizers=SPARSE, bad_runs=False, experiment="fastest_exact")
    build_report(tmp_path, experiment="paper")
    tiers = pd.read_csv(tmp_path / "tables" / "speed_tiers.csv")
    assert set(tiers["implementation"]) == {"dense", "fastest exact"}
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
    # (the tier matrix's header marks the study's column: see below)
    rows = [line for line in marked if line.startswith("| ") and "claim" not in line.split("|")[1]]
    # Table I, Table III and the arms table: SM3-II and SM3-I at both batches, two cells each
    assert len(rows) == 3 * 4 and all(line.count(EAGER_MARK) == 2 for line in rows)
    assert all(line.split("|")[1 + ("no_dropout" in line)].strip() in ("SM3-II", "SM3-I")
               for line in rows)  # fmt: skip
    assert "| 8.5 ± 0.04 †" in eager  # SM3-II's b64 runtime, Table I
    evidence = [line.strip() for line in marked if not line.startswith("| ")]
    assert evidence and all(e.startswith("- b") for e in evidence)
    assert all(" runtime min: " in e or " CPU-s per 1k examples: " in e for e in evidence)
    # each of Table I, Table III, the arms, the tier matrix, the claims and each judged
    # protocol's evidence says why
    assert eager.count(EAGER_NOTE) == 7
    assert f"| study {EAGER_MARK}" in eager  # the tier matrix marks the protocol column
    for name in ("table1_cpu_runtime", "table3_memory_speed", "claims"):  # and in LaTeX
        tex = (tmp_path / "None" / "tables" / f"{name}.tex").read_text()
        assert r"$^\dagger$ SM3 ran its eager path" in tex and tex.count(r"$^\dagger$") > 1
