"""The best_parser search through Hydra's Optuna sweeper: it stops, and resumes from SQLite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import harness_env, read_records

from sm3repro.report.tuning import study_trials

pytestmark = pytest.mark.slow

# A tiny slice and a small model: the search's mechanics, not its scores, are under test.
TINY = [
    "data.max_train_sentences=150",
    "data.max_eval_sentences=50",
    "~hydra.sweeper.params.epochs",
    "epochs=1",
    "~hydra.sweeper.params.ema_decay",  # after one short epoch, averaged weights parse nothing
    "ema_decay=null",
    "model.hidden=[64,64]",
    "torch_threads=1",
]


def _search(tmp_path: Path, ewt_dir: Path, n_trials: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "sm3repro.train", "-m", "hparams_search=best_parser",
         f"hydra.sweeper.n_trials={n_trials}", *TINY],
        cwd=tmp_path, env=harness_env(tmp_path, ewt_dir), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return proc


def test_search_stops_and_resumes_from_its_storage(tmp_path: Path, ewt_dir: Path) -> None:
    (tmp_path / "results" / "tuning").mkdir(parents=True)
    storage = f"sqlite:///{tmp_path}/results/tuning/best_parser.db"

    _search(tmp_path, ewt_dir, n_trials=3)
    first = study_trials(storage)
    print(first.to_string())
    assert sorted(first["number"]) == [0, 1, 2]
    assert set(first["state"]) == {"COMPLETE"}
    # Each trial is a recorded run, scored with a LAS that run recorded (macro, final epoch;
    # dev or test, whichever sm3repro.train.main returns).
    records = read_records(tmp_path / "results")
    assert len(records) == 3
    recorded = {
        s["final"][split]["las_macro"] for s in records.values() for split in ("dev", "test")
    }
    assert set(first["value"]) <= recorded

    proc = _search(tmp_path, ewt_dir, n_trials=2)
    assert "Using an existing study with name 'best_parser'" in proc.stdout + proc.stderr
    resumed = study_trials(storage)
    print(resumed.to_string())
    assert sorted(resumed["number"]) == [0, 1, 2, 3, 4]
    # The first three trials are kept as they were, not rerun.
    kept = resumed.set_index("number").loc[[0, 1, 2], ["value", "optimizer.lr"]]
    assert kept.equals(first.set_index("number").loc[[0, 1, 2], ["value", "optimizer.lr"]])
    assert resumed["value"].iloc[0] == resumed["value"].max()
    # ...and the new ones are new draws, not the first ones again.
    new = resumed.set_index("number").loc[[3, 4], "optimizer.lr"]
    assert not set(new) & set(first["optimizer.lr"])
