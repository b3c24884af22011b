"""The harness end to end, in subprocesses: sweeps, run records, W&B, resume, divergence."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import SMALL, harness_env, read_records
from wandb_offline import read_offline_run

from sm3repro.data.treebank import read_treebank

pytestmark = pytest.mark.slow  # every test runs the harness in subprocesses

SCORES = {"uas_micro", "las_micro", "uas_macro", "las_macro"}
RESOURCES = {
    "runtime_s", "runtime_min", "cpu_percent", "cpu_percent_peak", "system_cpu_percent_mean",
    "peak_rss_mb", "optimizer_state_bytes", "n_parameters", "examples_per_s",
    "epoch_time_s_mean", "torch_threads", "usable_cores", "data_load_s", "featurize_s",
}  # fmt: skip
PROVENANCE = {"git_commit", "git_dirty", "packages", "python", "cpu_model", "cpu_count", "command"}


def _comparable(summary: dict) -> dict:
    """What must not change between equivalent runs (timings and provenance excluded)."""
    return {k: summary[k] for k in ("status", "final", "best_dev", "epochs_completed")}


def _epoch_rows(run_dir: Path, kind: str = "epoch") -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def test_smoke_multirun_writes_complete_records_and_wandb_runs(run_harness, tmp_path, ewt_dir):
    proc = run_harness("-m", "optimizer=sm3_ii,adam", "batch_size=64,512", *SMALL)
    records = read_records(tmp_path / "results")
    assert len(records) == 4, proc.stderr
    assert "sm3repro: sweep of 4 runs: 4 trained, 0 skipped (already finished)" in proc.stdout
    for run_id, summary in records.items():
        run_dir = tmp_path / "results" / "runs" / run_id
        assert summary["status"] == "completed"
        assert summary["run_id"] == run_id and run_id.startswith(summary["optimizer"])
        assert SCORES <= set(summary["final"]["test"]) and SCORES <= set(summary["final"]["dev"])
        assert SCORES <= set(summary["best_dev"]["test"]) and summary["best_dev"]["epoch"] == 1
        assert 0 < summary["final"]["train_accuracy"] < 1 and summary["final"]["train_loss"] > 0
        assert RESOURCES <= set(summary["resources"]), RESOURCES - set(summary["resources"])
        assert summary["resources"]["runtime_s"] > 0 and summary["resources"]["peak_rss_mb"] > 100
        assert 0 < summary["resources"]["cpu_percent"] <= 100
        assert PROVENANCE <= set(summary["provenance"])
        assert summary["provenance"]["packages"]["torch"].startswith("2.13.0")
        assert set(summary["data"]["checksums"]) == {"train", "dev", "test"}
        assert summary["optimizer_impl"]
        assert (run_dir / "config.yaml").read_text().count("optimizer:") == 1
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert {r["kind"] for r in rows} == {"step", "epoch", "dev", "calibration"}
        epoch = _epoch_rows(run_dir)[0]
        assert {"train_loss", "train_accuracy", "dev_las_micro", "dev_uas_macro", "epoch_time_s",
                "examples_per_s", "cpu_percent"} <= set(epoch)  # fmt: skip
        predictions = read_treebank(run_dir / "predictions.conllu")
        assert len(predictions) == summary["final"]["test"]["sentences"] == 100
        assert not (run_dir / "checkpoint.pt").exists()

    by_opt = {(s["optimizer"], s["batch_size"]): s for s in records.values()}
    sm3_state = by_opt["sm3_ii", 64]["resources"]["optimizer_state_bytes"]
    adam_state = by_opt["adam", 64]["resources"]["optimizer_state_bytes"]
    assert 0 < sm3_state < 0.02 * adam_state

    wandb_runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 4
    logged = read_offline_run(wandb_runs[0])
    summary = records[next(r for r in records if r in wandb_runs[0].name)]
    assert logged["config"]["optimizer"]["name"] == summary["optimizer"]
    assert logged["config"]["batch_size"] == summary["batch_size"]
    losses = [row["train/loss"] for row in logged["history"] if "train/loss" in row]
    assert losses and all(loss > 0 for loss in losses)
    epochs = [row for row in logged["history"] if "epoch/dev_las_micro" in row]
    assert len(epochs) == 1
    assert abs(epochs[0]["epoch/dev_las_micro"] - summary["final"]["dev"]["las_micro"]) < 1e-9
    assert logged["summary"]["status"] == "completed"
    assert (
        abs(logged["summary"]["final/test/las_macro"] - summary["final"]["test"]["las_macro"])
        < 1e-9
    )
    assert logged["job_type"] == "train"
    assert logged["summary"]["epoch/dev_las_micro"] == {"max": summary["final"]["dev"]["las_micro"]}
    [record] = [a for a in logged["artifacts"] if a["type"] == "run-record"]
    assert record["name"] == f"record-{summary['run_id']}"
    files = {"config.yaml", "metrics.jsonl", "summary.json", "predictions.conllu"}
    assert set(record["files"]) == files

    # Rerunning the same sweep recognises every run and trains nothing.
    before = {k: v["provenance"]["finished_at"] for k, v in records.items()}
    again = run_harness("-m", "optimizer=sm3_ii,adam", "batch_size=64,512", *SMALL)
    assert again.stderr.count("skipping") + again.stdout.count("skipping") == 4
    assert "sm3repro: sweep of 4 runs: 0 trained, 4 skipped (already finished)" in again.stdout
    assert {
        k: v["provenance"]["finished_at"] for k, v in read_records(tmp_path / "results").items()
    } == before


@pytest.mark.parametrize(
    "variant",
    [
        ["optimizer=sm3_ii", "batch_size=64"],
        # lr schedule and weight average ride in the checkpoint too
        ["optimizer=adam", "optimizer.lr=0.001", "lr_schedule=linear", "ema_decay=0.9"],
    ],
    ids=["sm3_ii", "adam-linear-ema"],
)
def test_resume_after_kill_matches_an_uninterrupted_run(run_harness, tmp_path, ewt_dir, variant):
    args = [*variant, *SMALL, "epochs=2", "logger=none"]
    killed = run_harness(*args, env=harness_env(tmp_path, ewt_dir, SM3REPRO_FAULT="kill_after_epoch:1"),
                         check=False)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    [(run_id, partial)] = read_records(tmp_path / "results").items()
    run_dir = tmp_path / "results" / "runs" / run_id
    assert partial["status"] == "running" and partial["epochs_completed"] == 1
    assert (run_dir / "checkpoint.pt").exists() and len(_epoch_rows(run_dir)) == 1

    run_harness(*args)
    resumed = read_records(tmp_path / "results")[run_id]
    assert resumed["status"] == "completed" and resumed["resumed_from_epoch"] == 1

    reference_env = harness_env(tmp_path, ewt_dir, SM3REPRO_RESULTS=str(tmp_path / "reference"))
    run_harness(*args, env=reference_env)
    reference = read_records(tmp_path / "reference")[run_id]
    assert _comparable(resumed) == _comparable(reference)
    # differ between equal runs
    timing = ("time", "cpu", "rss", "per_s", "steal", "contended", "phases", "train_s")
    strip = lambda rows: [{k: v for k, v in r.items() if not any(t in k for t in timing)}  # noqa: E731
                          for r in rows]  # fmt: skip
    for kind in ("epoch", "dev"):  # the epochs, and the dev points within them
        assert strip(_epoch_rows(run_dir, kind)) == strip(
            _epoch_rows(tmp_path / "reference" / "runs" / run_id, kind)
        )


def test_divergence_is_recorded_and_the_sweep_carries_on(run_harness, tmp_path, ewt_dir):
    env = harness_env(tmp_path, ewt_dir, WANDB_MODE="disabled")
    run_harness("-m", "optimizer=sgd", "optimizer.lr=1000,0.01", *SMALL, env=env)
    records = read_records(tmp_path / "results")
    status = {s["run_id"].split("-")[0] + str(json.loads(json.dumps(s["resources"]))["runtime_s"] >= 0): s["status"]
              for s in records.values()}  # fmt: skip
    assert sorted(s["status"] for s in records.values()) == ["completed", "diverged"], status
    diverged = next(s for s in records.values() if s["status"] == "diverged")
    assert "non-finite" in diverged["reason"] and "final" not in diverged
    assert not (tmp_path / "wandb").exists()  # WANDB_MODE=disabled starts nothing


def test_joblib_launcher_runs_a_parallel_sweep(run_harness, tmp_path):
    proc = run_harness("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       "optimizer=sgd,adagrad", *SMALL, "logger=none")  # fmt: skip
    records = read_records(tmp_path / "results")
    assert sorted(s["optimizer"] for s in records.values()) == ["adagrad", "sgd"]
    assert all(s["status"] == "completed" for s in records.values())
    # The jobs ran in worker processes; the sweep's summary still counts them.
    assert "sm3repro: sweep of 2 runs: 2 trained, 0 skipped (already finished)" in proc.stdout


def test_bad_treebank_fails_with_one_line_naming_file_and_line(run_harness, tmp_path, ewt_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("en_ewt-ud-dev.conllu", "en_ewt-ud-test.conllu"):
        (bad / name).write_bytes((ewt_dir / name).read_bytes())
    (bad / "en_ewt-ud-train.conllu").write_text(
        "1\tHello\thello\tINTJ\tUH\t_\tX\tdiscourse\t_\t_\n\n"
    )
    proc = run_harness(f"data.dir={bad}", *SMALL, "logger=none", check=False)
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()[-1]
    assert "en_ewt-ud-train.conllu:1:" in message and "HEAD" in message
    assert "Traceback" not in proc.stderr


def test_a_kill_while_loading_or_building_leaves_no_run_folder(run_harness, tmp_path, ewt_dir):
    """SIGKILL at the last moment before the run folder is made (data loaded, optimizer
    built): nothing is left under results/runs, and the rerun trains from scratch."""
    args = [*SMALL, "logger=none"]
    env = harness_env(tmp_path, ewt_dir, SM3REPRO_FAULT="kill_before_run_folder")
    killed = run_harness(*args, env=env, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "loading data" in killed.stdout + killed.stderr
    assert list((tmp_path / "results" / "runs").iterdir()) == []
    run_harness(*args)
    [summary] = read_records(tmp_path / "results").values()
    assert summary["status"] == "completed" and "resumed_from_epoch" not in summary


def test_main_returns_the_configured_dev_metric_never_test(tmp_path, ewt_dir, monkeypatch):
    """What a Hydra sweeper optimises: a dev score named by ``optimized_metric``."""
    from hydra import compose, initialize_config_dir

    from sm3repro.run import train
    from sm3repro.run.config import ConfigError
    from sm3repro.run.train import CONF_DIR, main, run

    # In process: keep glibc's trim threshold as it was, or later RSS tests in this pytest
    # process see freed memory reused instead of new pages.
    monkeypatch.setattr(train, "tune_malloc", lambda: None)

    overrides = [*SMALL, "epochs=2", "logger=none", f"data.dir={ewt_dir}",
                 f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    threads, on_sigterm = torch.get_num_threads(), signal.getsignal(signal.SIGTERM)
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            final = main(compose("config", overrides=overrides))  # trains
            best = main(
                compose("config", overrides=[*overrides, "optimized_metric=best_dev.dev.uas_micro"])
            )
            bad = compose("config", overrides=[*overrides, "optimized_metric=final.test.las_macro"])
            with pytest.raises(ConfigError, match="optimized_metric='final.test.las_macro'"):
                run(bad)
    finally:
        torch.set_num_threads(threads)
        signal.signal(signal.SIGTERM, on_sigterm)
    [summary] = read_records(tmp_path / "results").values()  # the second call was a skip
    assert final == summary["final"]["dev"]["las_macro"] != summary["final"]["test"]["las_macro"]
    assert (
        best == summary["best_dev"]["dev"]["uas_micro"] != summary["best_dev"]["test"]["uas_micro"]
    )
