"""Tracking: offline W&B runs read back from disk, mode precedence, fallbacks, finish on error.

Nothing leaves the machine: every test points W&B at tmp folders and at a refused loopback
port (WANDB_BASE_URL=http://127.0.0.1:9).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from wandb_offline import read_offline_run

from sm3repro.run.tracking import (
    Tracker,
    WandbTracker,
    make_tracker,
    resolve_wandb_mode,
    wandb_safe_id,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
OFFLINE = {"name": "wandb", "project": "sm3repro-test", "entity": None, "mode": "offline"}


def wandb_env(root: Path) -> dict[str, str]:
    return {
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(root / "wandb_dir"),
        "WANDB_CACHE_DIR": str(root / "wandb_cache"),
        "WANDB_CONFIG_DIR": str(root / "wandb_config"),
        "WANDB_DATA_DIR": str(root / "wandb_data"),
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # refused: nothing can leave the machine
    }


@pytest.fixture(autouse=True)
def isolated_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in wandb_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_MODE", raising=False)


def offline_tracker(directory: Path, run_id: str = "sm3-b32-s1-abc", **kw) -> Tracker:
    args = dict(
        cfg=OFFLINE,
        run_name=run_id,
        run_id=run_id,
        config={"optimizer": {"name": "sm3", "lr": 0.1}, "batch_size": 32, "seed": 1},
        group="test-group",
        tags=["sm3", "batch32"],
        directory=directory,
    )
    args.update(kw)
    return make_tracker(**args)


# -- (a) an offline run, read back from its .wandb file --------------------------------------
def test_offline_run_round_trip(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    tracker = offline_tracker(tmp_path / "runs", job_type="train")
    init_s = time.perf_counter() - t0
    assert isinstance(tracker, WandbTracker), "offline W&B should start without network"
    assert init_s < 30
    with tracker:
        for step, loss in [(100, 2.5), (200, 1.5), (300, 1.25)]:
            tracker.log_step(step, {"train/loss": loss})
        tracker.log_epoch(1, {"train_loss": 2.0, "dev_las_micro": 0.61})
        tracker.log_step(400, {"loss": 1.0})  # gets the train/ prefix
        tracker.log_epoch(2, {"train_loss": 1.1, "dev_las_micro": 0.72})
        tracker.log_summary({"status": "completed", "final": {"test": {"las_micro": 0.7}}})
        tracker.log_table(
            "results", pd.DataFrame({"optimizer": ["sm3", "adam"], "las": [0.7, 0.69]})
        )
        (tmp_path / "summary.json").write_text('{"status": "completed"}')
        (tmp_path / "metrics.jsonl").write_text('{"kind": "epoch"}\n')
        tracker.log_files(
            "record-sm3-b32-s1-abc",
            "run-record",
            [tmp_path / "summary.json", tmp_path / "metrics.jsonl"],
        )

    run = read_offline_run(tmp_path / "runs")

    assert run["config"]["optimizer"] == {"name": "sm3", "lr": 0.1}
    assert run["config"]["batch_size"] == 32

    history = run["history"]
    losses = {row["_step"]: row["train/loss"] for row in history if "train/loss" in row}
    assert losses == {100: 2.5, 200: 1.5, 300: 1.25, 400: 1.0}
    epochs = {row["epoch"]: row for row in history if "epoch" in row}
    assert set(epochs) == {1, 2}
    assert epochs[1]["epoch/dev_las_micro"] == 0.61
    assert epochs[2]["epoch/train_loss"] == 1.1
    assert epochs[1]["_step"] == 300 and epochs[2]["_step"] == 400  # where each epoch ended
    steps = [row["_step"] for row in history]
    assert steps == sorted(steps)

    summary = run["summary"]
    assert summary["status"] == "completed"
    assert summary["final/test/las_micro"] == 0.7
    assert summary["train/loss"] == 1.0  # W&B keeps the last logged value too
    # define_metric: the summary shows the best dev LAS over epochs; epoch metrics plot
    # against `epoch`.
    assert summary["epoch/dev_las_micro"] == {"max": 0.72}
    assert run["job_type"] == "train"
    by_name = {m.get("name") or m.get("glob_name"): m for m in run["metrics"]}
    assert by_name["epoch/*"]["step_metric"] == "epoch"
    assert by_name["epoch/dev_las_macro"]["summary"] == {"max": True}

    # The record as an artifact, and the table collected into the run's outputs artifact.
    # (W&B itself also stores each logged table as a `run_table` artifact.)
    artifacts = {a["type"]: a for a in run["artifacts"]}
    assert set(artifacts) == {"run-record", "report", "run_table"}
    record = artifacts["run-record"]
    assert record["name"] == "record-sm3-b32-s1-abc"
    assert set(record["files"]) == {"summary.json", "metrics.jsonl"}
    assert (
        int(record["files"]["summary.json"]["size"]) == (tmp_path / "summary.json").stat().st_size
    )
    assert set(artifacts["report"]["files"]) == {"tables/results.table.json"}

    # leet flattens a logged dict (here the table's reference) into dotted keys.
    table_rows = [row for row in history if "results._type" in row]
    assert len(table_rows) == 1 and table_rows[0]["results._type"] == "table-file"
    run_dir = next((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    table = json.loads((run_dir / "files" / table_rows[0]["results.path"]).read_text())
    assert table["columns"] == ["optimizer", "las"]
    assert table["data"] == [["sm3", 0.7], ["adam", 0.69]]


def test_report_run_logs_tables_and_figures_as_one_artifact(tmp_path: Path) -> None:
    from PIL import Image

    figure = tmp_path / "loss.png"
    Image.new("RGB", (8, 8), "white").save(figure)
    tracker = offline_tracker(tmp_path / "runs", run_id="report-1", job_type="report")
    with tracker:
        # pd.NA (a missing number in the report's tables) must not lose the table.
        claims = pd.DataFrame({"claim": ["memory", "speed"], "ratio": [0.5, pd.NA]})
        tracker.log_table("claims", claims.astype({"ratio": "Float64"}))
        tracker.log_image("figures/loss", figure)
    run = read_offline_run(tmp_path / "runs")
    assert run["job_type"] == "report"
    [artifact] = [a for a in run["artifacts"] if a["type"] == "report"]
    assert artifact["name"] == "outputs-report-1"
    assert set(artifact["files"]) == {"tables/claims.table.json", "figures/loss.png"}
    assert int(artifact["files"]["figures/loss.png"]["size"]) == figure.stat().st_size
    [row] = [r for r in run["history"] if "claims._type" in r]
    run_dir = next((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    table = json.loads((run_dir / "files" / row["claims.path"]).read_text())
    assert table["data"] == [["memory", 0.5], ["speed", None]]


def test_unknown_job_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="job_type must be one of train, report, memory"):
        offline_tracker(tmp_path / "runs", job_type="eval")


def test_large_config_and_many_steps_read_back(tmp_path: Path) -> None:
    # A 100 KB config value spans the run file's 32 KiB blocks, and 300 step records push
    # later ones past block boundaries.
    big = "x" * 100_000
    tracker = offline_tracker(tmp_path / "runs", config={"big": big})
    with tracker:
        for step in range(1, 301):
            tracker.log_step(step, {"loss": 1.0 / step})
    run = read_offline_run(tmp_path / "runs")
    assert run["config"]["big"] == big
    losses = [row["train/loss"] for row in run["history"]]
    assert len(losses) == 300 and losses[-1] == pytest.approx(1 / 300)


def test_two_runs_in_one_process(tmp_path: Path) -> None:
    first = offline_tracker(tmp_path / "a", run_id="run-one")
    first.log_step(1, {"loss": 1.0})
    # No finish: reinit="finish_previous" must close the first run when the second starts.
    second = offline_tracker(tmp_path / "b", run_id="run-two")
    second.log_step(1, {"loss": 2.0})
    second.finish()
    first.finish()
    assert read_offline_run(tmp_path / "a")["history"][0]["train/loss"] == 1.0
    assert read_offline_run(tmp_path / "b")["history"][0]["train/loss"] == 2.0


# -- (b) disabled / none give a plain Tracker and start nothing -------------------------------
def test_env_disabled_beats_offline_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = offline_tracker(tmp_path / "runs")
    assert type(tracker) is Tracker
    with tracker:
        tracker.log_step(1, {"loss": 1.0})
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "wandb_dir").exists()


def test_logger_none_is_plain_tracker(tmp_path: Path) -> None:
    for cfg in ({"name": "none"}, None, {"name": "none", "mode": "offline"}):
        tracker = make_tracker(cfg, "r", "r", {}, None, [], tmp_path / "runs")
        assert type(tracker) is Tracker
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="logger.name"):
        make_tracker({"name": "tensorboard"}, "r", "r", {}, None, [], tmp_path)


def test_disabled_and_none_never_import_wandb(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import os, sys
        from sm3repro.run.tracking import make_tracker
        assert "wandb" not in sys.modules, "importing sm3repro.run.tracking imported wandb"
        make_tracker({{"name": "none"}}, "r", "r", {{}}, None, [], {str(tmp_path)!r})
        make_tracker({{"name": "wandb", "mode": "disabled"}}, "r", "r", {{}}, None, [], {str(tmp_path)!r})
        assert "wandb" not in sys.modules, "a disabled tracker imported wandb"
        """
    )
    env = {**os.environ, **wandb_env(tmp_path)}
    env.pop("WANDB_MODE", None)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


# -- (c) mode precedence ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "config", "expected"),
    [
        (None, None, "offline"),
        (None, "online", "online"),
        (None, "disabled", "disabled"),
        (None, "dryrun", "offline"),
        (None, "OFFLINE", "offline"),
        ("online", "offline", "online"),
        ("disabled", "offline", "disabled"),
        ("offline", "online", "offline"),
        ("dryrun", "online", "offline"),
        ("", "online", "online"),  # empty env var counts as unset
    ],
)
def test_mode_precedence(
    monkeypatch: pytest.MonkeyPatch, env: str | None, config: str | None, expected: str
) -> None:
    if env is not None:
        monkeypatch.setenv("WANDB_MODE", env)
    assert resolve_wandb_mode(config) == expected


def test_bad_mode_names_logger_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"logger\.mode.*online, offline, disabled"):
        resolve_wandb_mode("shared")
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match=r"WANDB_MODE"):
        resolve_wandb_mode("offline")


def test_wandb_safe_id() -> None:
    assert wandb_safe_id("sm3-b32-s1-0a1b2c") == "sm3-b32-s1-0a1b2c"
    a, b = wandb_safe_id("exp/a:b"), wandb_safe_id("exp/a;b")
    assert a != b
    assert all(c not in a for c in ":;,#?/'") and len(wandb_safe_id("x" * 300)) <= 64


# -- (d) online without network: bounded, warned, plain Tracker, clean exit ---------------------
@pytest.mark.slow  # waits out W&B's init timeout in a subprocess
def test_online_without_network_falls_back(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import time, warnings
        from sm3repro.run.tracking import Tracker, make_tracker
        cfg = {{"name": "wandb", "project": "p", "mode": "online", "init_timeout": 10}}
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker = make_tracker(cfg, "r", "r", {{"a": 1}}, None, [], {str(tmp_path / "runs")!r})
        print("ELAPSED", time.perf_counter() - t0)
        assert type(tracker) is Tracker, tracker
        assert any("could not start" in str(w.message) for w in caught), [str(w.message) for w in caught]
        with tracker:
            tracker.log_step(1, {{"loss": 1.0}})
        # The next job of a sweep in this process does not wait again.
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = make_tracker(cfg, "r2", "r2", {{}}, None, [], {str(tmp_path / "runs")!r})
        assert type(again) is Tracker and time.perf_counter() - t0 < 2
        assert any("already failed" in str(w.message) for w in caught)
        """
    )
    env = {**os.environ, **wandb_env(tmp_path)}
    env.pop("WANDB_MODE", None)
    # A well-formed dummy key gets W&B past its "not logged in" check to the network wait.
    env["WANDB_API_KEY"] = "0" * 40
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    total = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    elapsed = float(proc.stdout.split("ELAPSED")[1].split()[0])
    assert elapsed < 40 and total < 60, (elapsed, total)


# -- (e) finish runs even when the block raises ------------------------------------------------
def test_exception_in_block_still_finishes() -> None:
    class Spy(Tracker):
        codes: list[int] = []

        def finish(self, exit_code: int = 0) -> None:
            self.codes.append(exit_code)

    with pytest.raises(RuntimeError, match="boom"), Spy() as spy:
        raise RuntimeError("boom")
    with Spy():
        pass
    assert spy.codes == [1, 0]


def test_exception_marks_offline_run_failed(tmp_path: Path) -> None:
    tracker = offline_tracker(tmp_path / "runs")
    with pytest.raises(KeyError), tracker:
        tracker.log_step(1, {"loss": 3.0})
        raise KeyError("mid-epoch failure")
    run = read_offline_run(tmp_path / "runs")
    assert run["exit_code"] == 1
    assert run["history"][0]["train/loss"] == 3.0


def test_wandb_errors_mid_run_only_warn() -> None:
    class BrokenRun:
        def define_metric(self, *a, **k) -> None:
            pass

        def log(self, *a, **k) -> None:
            raise ConnectionError("network gone")

        def finish(self, exit_code: int = 0) -> None:
            raise ConnectionError("still gone")

    tracker = WandbTracker(BrokenRun(), wandb_module=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tracker:
            tracker.log_step(1, {"loss": 1.0})
            tracker.log_step(2, {"loss": 1.0})
            tracker.log_epoch(1, {"x": 1})
    messages = [str(w.message) for w in caught]
    assert sum("W&B log failed" in m for m in messages) == 1  # warned once, not per step
    assert any("W&B finish failed" in m for m in messages)
