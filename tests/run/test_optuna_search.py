"""The best_parser search through Hydra's Optuna sweeper: it stops, and resumes from SQLite,
and makes its storage folder under any results_dir."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import harness_env, read_records
from omegaconf import OmegaConf

from sm3repro.report.tuning import study_trials
from sm3repro.run.study_storage import StudyStorageFolder, sqlite_file

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


def _search(
    tmp_path: Path, ewt_dir: Path, n_trials: int, extra: Sequence[str] = ()
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "sm3repro.train", "-m", "hparams_search=best_parser",
         f"hydra.sweeper.n_trials={n_trials}", *TINY, *extra],
        cwd=tmp_path, env=harness_env(tmp_path, ewt_dir), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_search_stops_and_resumes_from_its_storage(tmp_path: Path, ewt_dir: Path) -> None:
    (tmp_path / "results" / "tuning").mkdir(parents=True)
    storage = f"sqlite:///{tmp_path}/results/tuning/best_parser.db"

    _search(tmp_path, ewt_dir, n_trials=3)
    first = study_trials(storage)
    print(first.to_string())
    assert sorted(first["number"]) == [0, 1, 2]
    assert set(first["state"]) == {"COMPLETE"}
    # Each trial is a recorded run, scored with a LAS that run recorded (macro, final epoch;
    # dev or test, whichever sm3repro.run.train.main returns).
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


@pytest.mark.slow
def test_search_creates_its_storage_folder_under_a_new_results_dir(
    tmp_path: Path, ewt_dir: Path
) -> None:
    """`results_dir=<a folder that does not exist>`: the study's SQLite folder (tuning/) is
    made before the sweeper opens it, instead of "unable to open database file"."""
    results = tmp_path / "new" / "results"
    proc = _search(tmp_path, ewt_dir, n_trials=1, extra=[f"results_dir={results}"])
    assert (results / "tuning" / "best_parser.db").is_file(), proc.stderr
    trials = study_trials(f"sqlite:///{results}/tuning/best_parser.db")
    assert list(trials["state"]) == ["COMPLETE"]
    assert len(read_records(results)) == 1  # the trial's run, recorded under that results_dir


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///results/tuning/best_parser.db", "results/tuning/best_parser.db"),
        ("sqlite:////tmp/r/tuning/s.db", "/tmp/r/tuning/s.db"),
        ("sqlite+pysqlite:///a/b.db?timeout=20", "a/b.db"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql://user@host/optuna", None),
        ("results/tuning/best_parser.db", None),
    ],
)
def test_sqlite_file_of_a_storage_url(url: str, path: str | None) -> None:
    assert sqlite_file(url) == (None if path is None else Path(path))


def test_multirun_start_makes_only_a_sqlite_storage_folder(tmp_path: Path) -> None:
    callback = StudyStorageFolder()
    storage = f"sqlite:///{tmp_path}/results/tuning/best_parser.db"
    callback.on_multirun_start(OmegaConf.create({"hydra": {"sweeper": {"storage": storage}}}))
    assert (tmp_path / "results" / "tuning").is_dir()
    assert not (tmp_path / "results" / "tuning" / "best_parser.db").exists()  # Optuna's to make
    for sweeper in ({}, {"storage": None}):  # the basic sweeper; Optuna without storage
        callback.on_multirun_start(OmegaConf.create({"hydra": {"sweeper": sweeper}}))
