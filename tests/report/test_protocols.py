"""Protocol arms: lr selection from records, the tuned-lr config, contention, the claims matrix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import harness_env
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from report_fixtures import BASE, make_run, write_results, write_run

from sm3repro.arms.lr_selection.cli import main
from sm3repro.arms.lr_selection.records import cell_run_ids, choices_from_records
from sm3repro.arms.lr_selection.tuned_config import out_of_date, tuned_yaml
from sm3repro.arms.protocols import PROTOCOLS, arms
from sm3repro.optim import catalog
from sm3repro.record.identity import run_id_for
from sm3repro.record.reader import read_records
from sm3repro.report.build import build_report
from sm3repro.report.claims import judge_claims, named_optimizers
from sm3repro.report.protocols import ProtocolResult, anchor, judge_protocol, matrix, robustness
from sm3repro.report.results import Results, load_runs
from sm3repro.report.tables import aggregate, table1
from sm3repro.report.timing import uncontended
from sm3repro.run.config import ConfigError, validate
from sm3repro.run.grid import config_dir


def _record(
    results: Path, cell: tuple[str, int], run_id: str, dev: float | None, status: str = "completed"
) -> None:
    """A record of the lr grid's ``cell`` at ``run_id``: its final dev macro LAS ``dev``."""
    optimizer, batch = cell
    summary, metrics = make_run(optimizer, batch, 0, BASE[cell], 2, experiment="lr_grid")
    summary.update(run_id=run_id, status=status)
    if dev is not None:
        summary["final"]["dev"]["las_macro"] = dev
    else:
        summary.pop("final")
    write_run(results, summary, metrics)


# -- lr selection through the records ----------------------------------------------------------
@pytest.fixture(scope="module")
def lr_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SGD@512 best at the grid's top end; Adam@64 best inside, one lr diverged; SM3-II@64
    half run, one run still in progress; every other cell without records."""
    results = tmp_path_factory.mktemp("lr")
    ids = cell_run_ids()
    for lr, dev in {0.001: 0.0, 0.003: 0.01, 0.01: 0.2, 0.03: 0.5, 0.1: 0.7}.items():
        _record(results, ("sgd", 512), ids[("sgd", 512)][lr], dev)
    for lr, dev in {0.001: 0.80, 0.003: 0.83, 0.01: 0.16, 0.03: 0.02}.items():
        _record(results, ("adam", 64), ids[("adam", 64)][lr], dev)
    _record(results, ("adam", 64), ids[("adam", 64)][0.1], None, status="diverged")
    _record(results, ("sm3_ii", 64), ids[("sm3_ii", 64)][0.01], 0.77)
    _record(results, ("sm3_ii", 64), ids[("sm3_ii", 64)][0.03], 0.78)
    # not finished: not used
    _record(results, ("sm3_ii", 64), ids[("sm3_ii", 64)][0.1], 0.9, status="running")
    return results


def test_selection_from_records_picks_the_dev_best_and_extends_an_end(lr_results: Path) -> None:
    choices, scores, cells = choices_from_records(read_records(lr_results))
    by_cell = {(c.optimizer, c.batch_size): c for c in choices}
    assert len(cells) == 10 and set(by_cell) == {("sgd", 512), ("adam", 64), ("sm3_ii", 64)}
    sgd, adam, sm3 = by_cell[("sgd", 512)], by_cell[("adam", 64)], by_cell[("sm3_ii", 64)]
    assert sgd.lr == 0.1 and sgd.extend_to == 0.3 and not sgd.settled
    assert adam.lr == 0.003 and adam.settled and 0.1 in adam.tried  # the diverged run counts
    assert sm3.lr == 0.03 and 0.1 not in sm3.tried and sm3.pending == (0.001, 0.003, 0.1)
    assert scores.loc[scores["status"] == "diverged", "dev_las_macro"].isna().all()


def test_selection_cli_prints_the_commands_for_what_is_missing(lr_results: Path, capsys) -> None:
    main(["--results", str(lr_results)])
    out = capsys.readouterr().out
    assert "1 of 10 cells settled." in out  # Adam@64
    run = "python -m sm3repro.train -m experiment=lr_grid"
    assert f"{run} optimizer=sgd batch_size=512 optimizer.lr=0.3\n" in out
    assert f"{run} optimizer=sm3_ii batch_size=64 optimizer.lr=0.001,0.003,0.1\n" in out
    assert f"{run} optimizer=adam batch_size=512 optimizer.lr=0.001,0.003,0.01,0.03,0.1" in out
    assert "optimizer=adam batch_size=64" not in out


def test_the_printed_command_runs_exactly_the_missing_lrs() -> None:
    """Command-line values of a swept key replace the experiment's sweeper params, as
    `python -m sm3repro.train -m` expands them (Hydra's BasicSweeper)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        sweep = compose("config", overrides=["experiment=lr_grid"], return_hydra_config=True)
    params = [f"{key}={value}" for key, value in sweep.hydra.sweeper.params.items()]
    command = ["optimizer=sgd", "batch_size=512", "optimizer.lr=0.3,1.0"]
    parsed = OverridesParser.create().parse_overrides(params + command)
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    assert [sorted(job) for job in jobs] == [
        ["batch_size=512", "optimizer.lr=0.3", "optimizer=sgd", "seed=0"],
        ["batch_size=512", "optimizer.lr=1.0", "optimizer=sgd", "seed=0"],
    ]


def _compose(*overrides: str) -> OmegaConf:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_tuned_yaml_is_a_valid_experiment_whose_seed0_runs_reuse_the_grid(
    lr_results: Path, tmp_path: Path
) -> None:
    choices, scores, _ = choices_from_records(read_records(lr_results))
    text = tuned_yaml(choices, scores, "results")
    table = yaml.safe_load(text)["lr_table"]
    assert table == {"sgd": {"b512": 0.1}, "adam": {"b64": 0.003}, "sm3_ii": {"b64": 0.03}}
    written = tmp_path / "tuned_lr.yaml"
    written.write_text(text)
    assert out_of_date(choices, written) == []  # the config carries every choice
    written.write_text(text.replace("b64: 0.003", "b64: 0.01"))
    assert out_of_date(choices, written) == ["adam@64"]
    assert "UNSETTLED (provisional)" in text and "; settled" in text
    assert cell_run_ids()[("adam", 64)][0.003] in text  # names the record it came from

    tuned = _compose("experiment=tuned_lr", "optimizer=adam", "batch_size=64",
                     "lr_table.adam.b64=0.003")  # fmt: skip
    grid = _compose("experiment=lr_grid", "optimizer=adam", "batch_size=64", "optimizer.lr=0.003")
    assert tuned.optimizer.lr == 0.003 and tuned.experiment_name != grid.experiment_name
    resolved = [OmegaConf.to_container(c, resolve=True) for c in (tuned, grid)]
    assert run_id_for(resolved[0]) == run_id_for(resolved[1])


def test_a_cell_without_a_tuned_lr_fails_validation_in_one_line() -> None:
    cfg = _compose("experiment=tuned_lr", "optimizer=adam", "batch_size=64", "lr_table=null")
    with pytest.raises(ConfigError, match="lr_table has no lr for adam at batch 64") as err:
        validate(cfg)
    assert "\n" not in str(err.value)


# -- contention and CPU cost -------------------------------------------------------------------
def _edit_summary(results: Path, prefix: str, edit) -> None:
    (path,) = (results / "runs").glob(f"{prefix}-*/summary.json")
    summary = json.loads(path.read_text())
    edit(summary)
    path.write_text(json.dumps(summary))


def test_a_contended_run_is_left_out_of_timing_verdicts_and_counted(tmp_path: Path) -> None:
    write_results(tmp_path, epochs=2, bad_runs=False)
    # SM3-II would be slower than Adam at batch 64 if this run's minutes counted
    _edit_summary(tmp_path, "sm3_ii-b64-s0", lambda s: s["resources"].update(
        contended=True, others_cpu_percent=40.0, runtime_min=60.0, runtime_s=3600.0))  # fmt: skip
    loaded = load_runs(tmp_path)
    verdicts = judge_claims(aggregate(uncontended(loaded.runs))).set_index("claim")["verdict"]
    assert verdicts[3] == "holds" and verdicts[4] == "holds"
    counted = judge_claims(aggregate(loaded.runs)).set_index("claim")["verdict"]
    assert counted[3] == "inconclusive"  # the contended minutes would have spread SM3-II apart
    assert loaded.contention.contended == 1 and loaded.contention.total == 30
    assert "1 of 30 run(s) left out as contended" in loaded.contention.note()
    md = build_report(tmp_path).read_text()  # the report judges the same way and says so
    assert "1 of 30 run(s) left out as contended" in md
    assert '<a id="study-claim-3"></a>**Claim 3**: holds' in md and "[holds](#study-claim-3)" in md


def test_a_run_on_fewer_threads_than_cores_is_left_out_of_timing_verdicts(tmp_path: Path) -> None:
    """Score-only selection runs take one thread: their minutes measure another setup."""
    write_results(tmp_path, epochs=2, bad_runs=False)
    _edit_summary(tmp_path, "sm3_ii-b64-s0", lambda s: s["resources"].update(
        torch_threads=1, usable_cores=2, runtime_min=60.0, runtime_s=3600.0))  # fmt: skip
    loaded = load_runs(tmp_path)
    assert loaded.runs["fewer_threads"].sum() == 1
    verdicts = judge_claims(aggregate(uncontended(loaded.runs))).set_index("claim")["verdict"]
    assert verdicts[3] == "holds"
    assert loaded.contention.fewer_threads == 1 and loaded.contention.contended == 0
    assert "1 that used fewer torch threads than usable cores" in loaded.contention.note()
    assert "averaged over the other 29" in loaded.contention.note()


def test_contention_is_derived_for_older_records_from_their_epoch_cpu(tmp_path: Path) -> None:
    write_results(tmp_path, epochs=2, bad_runs=False)
    (metrics,) = (tmp_path / "runs").glob("adam-b512-s1-*/metrics.jsonl")
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    for row in rows:  # others took 30% of the cores: system-wide CPU% 30 points above ours
        if row["kind"] == "epoch":
            row["system_cpu_percent"] = row["cpu_percent"] + 30
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_runs(tmp_path)
    adam = loaded.runs.set_index("run_id").filter(like="adam-b512-s1", axis=0).iloc[0]
    assert adam["contended"] and adam["contention_derived"]
    assert adam["others_cpu_percent"] == pytest.approx(30)
    assert loaded.contention.contended == 1 and loaded.contention.derived == 1
    assert loaded.contention.unknown == 29  # the fixtures record no system CPU%
    assert "derived from their per-epoch system CPU%" in loaded.contention.note()


def test_cpu_seconds_per_1k_examples_recorded_or_derived(tmp_path: Path) -> None:
    write_results(tmp_path, epochs=2, bad_runs=False)
    _edit_summary(tmp_path, "sgd-b64-s0",
                  lambda s: s["resources"].update(cpu_s_per_1k_examples=0.123))  # fmt: skip
    runs = load_runs(tmp_path).runs.set_index("run_id")
    sgd = runs.filter(like="sgd-b64-s0", axis=0).iloc[0]
    assert sgd["cpu_s_per_1k"] == 0.123 and not sgd["cpu_s_per_1k_derived"]
    adam = runs.filter(like="adam-b64-s0", axis=0).iloc[0]  # CPU% x cores x s / examples
    expected = 1000 * adam["cpu_percent"] / 100 * 2 * adam["runtime_s"] / (392_214 * 2)
    assert adam["cpu_s_per_1k"] == pytest.approx(expected) and adam["cpu_s_per_1k_derived"]


# -- the claims x protocol matrix --------------------------------------------------------------
def _judged(results: Path, tweaks=None) -> ProtocolResult:
    write_results(results, epochs=2, bad_runs=False, tweaks=tweaks)
    loaded = load_runs(results)
    from sm3repro.report.claims import judge_all

    return ProtocolResult(
        PROTOCOLS[0], 30, 30, loaded, judge_all(aggregate(uncontended(loaded.runs)))
    )


def test_protocols_are_entries_that_the_arms_script_and_the_report_share() -> None:
    """The study's protocol comes first and is run by `make sweep`; the arms script runs every
    other entry, in order (a new arm is its experiment yaml and one entry); names are unique and
    every experiment an entry reads has its config."""
    study, *others = PROTOCOLS
    assert (study.key, study.experiment, study.arm_run) == ("study", "paper", "")
    assert study.seed_means and not study.waits_for_lr_selection and not study.paired
    assert list(arms()) == others and all(p.arm_run in ("sweep", "seed blocks") for p in others)
    for names in ([p.key for p in PROTOCOLS], [p.speed_label for p in PROTOCOLS]):
        assert len(names) == len(set(names))
    for p in PROTOCOLS:
        for experiment in p.experiments:
            assert (config_dir() / "experiment" / f"{experiment}.yaml").is_file(), experiment
    run_arms = Path(__file__).resolve().parents[2] / "scripts" / "run_arms.py"
    assert "arms()" in run_arms.read_text()  # the script reads the entries, not a list of its own


def test_matrix_labels_a_flipped_verdict_protocol_sensitive(tmp_path: Path) -> None:
    study = _judged(tmp_path / "a")
    tuned = _judged(tmp_path / "b", tweaks={("sm3_ii", 64): {"optimizer_state_bytes": 2e7}})
    no_dropout = _judged(tmp_path / "c")
    tuned.protocol, no_dropout.protocol = PROTOCOLS[1], PROTOCOLS[2]
    table = matrix([study, tuned, no_dropout]).set_index("claim")
    assert list(table.columns) == ["study", "tuned_lr", "no_dropout", "across"]
    assert table.loc[6, "tuned_lr"] == "does not hold" and table.loc[6, "study"] == "holds"
    assert table.loc[6, "across"] == "protocol-sensitive"
    assert (table.drop(index=6)["across"] == "robust").all()
    assert tuned.cell(6) == "does not hold" and anchor(tuned.protocol, 6) == "tuned_lr-claim-6"


def test_a_protocol_without_complete_runs_is_pending_and_undetermined(tmp_path: Path) -> None:
    study = _judged(tmp_path)
    tuned = ProtocolResult(PROTOCOLS[1], 12, 30, study.loaded, None)
    no_dropout = ProtocolResult(PROTOCOLS[2], 0, 30, study.loaded, None, "lr selection: 3 of 10")
    table = matrix([study, tuned, no_dropout])
    assert (table["tuned_lr"] == "pending (12 of 30 runs)").all()
    assert (table["no_dropout"] == "pending (0 of 30 runs; lr selection: 3 of 10)").all()
    assert (table["across"] == "undetermined").all()
    assert (
        robustness(["holds", "holds (n=1: no seed spread, judged on means)", "holds"]) == "robust"
    )


def test_judge_protocol_withholds_verdicts_until_its_grid_has_finished(tmp_path: Path) -> None:
    write_results(tmp_path, epochs=2, bad_runs=False)
    results = Results(tmp_path)
    paper = judge_protocol(results, PROTOCOLS[0])
    assert paper.complete and paper.finished == paper.grid == 30
    no_dropout = judge_protocol(results, PROTOCOLS[2])  # other run ids: none of these count
    assert not no_dropout.complete and no_dropout.finished == 0
    assert no_dropout.cell(1) == "pending (0 of 30 runs)"
    # one of the study's runs missing: its verdicts wait
    (missing,) = (tmp_path / "runs").glob("adagrad-b512-s2-*/summary.json")
    missing.unlink()
    study = judge_protocol(Results(tmp_path), PROTOCOLS[0])
    assert not study.complete and study.cell(1) == "pending (29 of 30 runs)"


def test_an_extra_optimizer_joins_the_tables_without_holding_the_verdicts_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a sixth optimizer in the paper grid, the study's verdicts need only the runs of the
    optimizers the claims name; the extra's runs join the tables when they come."""
    import sm3repro.run.config as config
    from sm3repro.run import grid

    assert "adafactor" not in named_optimizers()
    monkeypatch.setattr(config, "paper_grid", lambda: (*catalog.paper_grid(), "adafactor"))
    grid._grid_configs.cache_clear()
    try:
        assert len(grid.grid_run_ids("paper")) == 36
        write_results(tmp_path, epochs=2, bad_runs=False)  # the study's five: 30 runs
        study = judge_protocol(Results(tmp_path), PROTOCOLS[0])
        assert study.complete and (study.finished, study.grid) == (30, 30)
        assert study.cell(1) == "holds"
        for batch in (64, 512):  # the extra's runs, at the grid's own run ids
            write_run(tmp_path, *make_run("adafactor", batch, 0, BASE[("adam", batch)], 2))
        results = Results(tmp_path)
        study = judge_protocol(results, PROTOCOLS[0])
        assert study.complete and study.cell(1) == "holds"
        t1 = table1(aggregate(results.runset("paper").runs))
        assert t1.loc[t1["optimizer"] == "adafactor", "n"].tolist() == [1, 1]
        assert "4 of the `paper` grid's 36 runs" in " ".join(results.runset("paper").notes)
    finally:
        grid._grid_configs.cache_clear()


def test_the_lr_selection_holds_back_only_the_cells_the_claims_read(monkeypatch) -> None:
    from sm3repro.arms.lr_selection.rule import GRID, CellChoice
    from sm3repro.report import verdicts

    cells = [(name, batch) for name in sorted(named_optimizers()) for batch in (64, 512)]
    settled = [CellChoice(o, b, 0.01, 0.8, GRID, None, ()) for o, b in cells]
    extra = CellChoice("adafactor", 64, 0.1, 0.5, (0.1,), 0.3, GRID[:-1])  # far from settled
    compared = []
    monkeypatch.setattr(verdicts, "out_of_date", lambda choices: compared.append(choices) or [])
    lr = verdicts.LrSelection(pd.DataFrame(), [*cells, ("adafactor", 64)], [*settled, extra])
    assert verdicts.lr_waiting_for(lr) is None
    assert [c.optimizer for c in compared[0]] == [o for o, _ in cells]  # the extra is not read
    lr.choices = [*settled[1:], extra]  # one of the claims' cells has no record yet
    assert verdicts.lr_waiting_for(lr) == "lr selection: 9 of 10 cells settled"
    monkeypatch.setattr(verdicts, "out_of_date", lambda choices: ["adam@64"])
    lr.choices = settled
    assert verdicts.lr_waiting_for(lr) == (
        "tuned_lr.yaml out of date for adam@64 (rerun --write-tuned)"
    )


def test_the_study_report_holds_the_matrix_and_lr_figure(tmp_path: Path) -> None:
    write_results(tmp_path, epochs=2, bad_runs=False)
    md = build_report(tmp_path).read_text()
    summary = md.split("## Summary\n", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in summary.splitlines() if line.startswith("| #"))
    judged = [p.speed_label.capitalize() for p in PROTOCOLS if p.seed_means]  # Study, Tuned lr..
    assert header.split(" | ")[1:] == ["Claim (study)", "Judged by", *judged, "Across protocols |"]
    rows = [line.split(" | ") for line in summary.splitlines() if line.startswith("| ")][1:]
    seed_means = [row for row in rows if row[2] == "seed means"]
    assert [row[0] for row in seed_means] == [f"| {n}" for n in range(1, 8)]
    assert seed_means[0][1].startswith("SM3's training loss is clearly higher")  # its words
    # claims 3 and 4 in tiers: rows of their own, each verdict linked to the tiers' section
    tiers = [row for row in rows if row[2] != "seed means"]
    assert {row[0] for row in tiers} == {"| 3", "| 4"}
    assert {row[2] for row in tiers} == {"fixed epochs (95% intervals)",
                                         "time to target (95% intervals)"}  # fmt: skip
    assert all("(#claims-3-and-4-in-tiers-with-stated-confidence)" in row[3] for row in tiers)
    assert "[holds](#study-claim-1)" in summary and '<a id="study-claim-1"></a>' in md
    assert md.count("**Claim 1**: holds") == 1  # the study's evidence once, under its protocol
    assert "pending (0 of 30 runs)" in md and "*undetermined*" in md
    assert "![Dev macro LAS against lr](figures/fig_lr_sensitivity.png)" in md
    assert (tmp_path / "figures" / "fig_lr_sensitivity.png").stat().st_size > 5_000
    assert "0 of 30 run(s) left out as contended" in md
    matrix_csv = pd.read_csv(tmp_path / "tables" / "protocol_matrix.csv")
    assert matrix_csv["study"].eq("holds").all()


def test_the_arms_table_times_only_the_runs_the_verdicts_time(tmp_path: Path) -> None:
    """Scores over every run; runtime and CPU cost without the contended and the 1-thread run."""
    from sm3repro.report.sections.protocol_arms import arms_table

    write_results(tmp_path, epochs=2, bad_runs=False)
    _edit_summary(tmp_path, "sm3_ii-b64-s0", lambda s: s["resources"].update(
        contended=True, others_cpu_percent=40.0, runtime_min=60.0, runtime_s=3600.0))  # fmt: skip
    _edit_summary(tmp_path, "sm3_ii-b64-s1", lambda s: s["resources"].update(
        torch_threads=1, usable_cores=2, runtime_min=50.0, runtime_s=3000.0))  # fmt: skip
    loaded = load_runs(tmp_path)
    table = arms_table([ProtocolResult(PROTOCOLS[1], 30, 30, loaded, None)])
    row = table.set_index(["optimizer", "batch_size"]).loc[("sm3_ii", 64)]
    runs = loaded.runs[(loaded.runs["optimizer"] == "sm3_ii") & (loaded.runs["batch_size"] == 64)]
    timed = runs[runs["seed"] == 2]
    assert row["n"] == 3 and row["n_timed"] == 1
    assert row["runtime_min_mean"] == pytest.approx(timed["runtime_min"].iloc[0], abs=0.01)
    assert row["cpu_s_per_1k_mean"] == pytest.approx(timed["cpu_s_per_1k"].iloc[0], abs=1e-4)
    assert row["test_las_macro_mean"] == pytest.approx(runs["test_las_macro"].mean(), abs=1e-3)
    adam = table.set_index(["optimizer", "batch_size"]).loc[("adam", 64)]
    assert adam["n_timed"] == 3
    assert row["runtime_vs_adam"] == pytest.approx(
        row["runtime_min_mean"] / adam["runtime_min_mean"], abs=0.01
    )


# -- the lr grid config end to end -------------------------------------------------------------
@pytest.mark.slow
def test_lr_grid_sweep_then_selection(tmp_path: Path, ewt_dir: Path) -> None:
    tiny = ["data.max_train_sentences=100", "data.max_eval_sentences=30", "epochs=1"]
    env = harness_env(tmp_path, ewt_dir)
    results = tmp_path / "results"
    train = [sys.executable, "-m", "sm3repro.train", "-m", "experiment=lr_grid",
             "optimizer=sgd", "batch_size=64", "optimizer.lr=0.01,0.1", *tiny,
             "logger=none", "torch_threads=1", f"results_dir={results}"]  # fmt: skip
    proc = subprocess.run(train, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((results / "runs").glob("sgd-b64-s0-*/summary.json"))) == 2

    select = [sys.executable, "-m", "sm3repro.arms.lr_selection", "--results", str(results),
              "--write-tuned", str(tmp_path / "tuned.yaml"), *tiny]  # fmt: skip
    proc = subprocess.run(
        select, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sgd = next(line for line in proc.stdout.splitlines() if line.split()[:2] == ["sgd", "64"])
    assert "0.01 0.1" in sgd  # both lrs found through their run ids
    assert "optimizer=sgd batch_size=64 optimizer.lr=" in proc.stdout and tiny[0] in proc.stdout
    chosen = yaml.safe_load((tmp_path / "tuned.yaml").read_text())["lr_table"]["sgd"]["b64"]
    assert chosen in (0.01, 0.1)
