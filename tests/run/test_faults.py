"""Faults injected for real: malformed files, bad settings, signals, damaged records, two
sweeps at once, read-only and full folders, W&B without network, a diverging run.

The cases live in scripts/faultcases.py and are shared with scripts/fault_suite.py, which also runs
the slower ones (every malformed file through the CLI, more signal timings, random kills, a
missing config.yaml, cache faults through the CLI, a disk full from the start, a W&B server
that never answers). Here: the quick half, plus in-process checks of the pieces beneath.
"""

from __future__ import annotations

import json
import signal
import threading
import warnings
from pathlib import Path

import faultcases as fc
import numpy as np
import pytest
import torch
from faultlib import Bench, Lab, assert_handled, fingerprint, reference_id

from sm3repro.data.treebank import TreebankError
from sm3repro.parser.features import load_or_build
from sm3repro.record.folder import RunDir
from sm3repro.run.config import ConfigError

# The cases run the harness in subprocesses against a reference sweep built once per session.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def bench(tmp_path_factory: pytest.TempPathFactory, ewt_dir: Path) -> Bench:
    """The small data set and the uninterrupted reference sweep every case compares with."""
    return Bench.build(tmp_path_factory.mktemp("fault-bench"), ewt_dir)


@pytest.fixture
def lab(bench: Bench, tmp_path: Path) -> Lab:
    return Lab(bench, tmp_path)


# -- bad input -------------------------------------------------------------------------------
def test_bad_treebanks_fail_on_the_cli_with_one_line(lab: Lab) -> None:
    assert_handled(*fc.bad_treebanks(lab, fc.CLI_TREEBANK_SAMPLE))


@pytest.fixture
def restore_threads():
    # run() pins torch's thread count for its process: put the test process's back.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", fc.BAD_TREEBANKS, ids=[c.name for c in fc.BAD_TREEBANKS])
def test_every_bad_treebank_stops_run_with_file_line_and_problem(
    lab: Lab, case: fc.BadInput, restore_threads: None
) -> None:
    """In process, through train.run: the error main() prints as its one line."""
    from hydra import compose, initialize_config_dir

    from sm3repro.paths import config_dir
    from sm3repro.run.train import run

    path = fc.bad_input_path(lab, case)
    overrides = [
        *fc.TRAIN,
        f"data.dir={lab.bench.data}",
        f"data.train={path}",
        f"results_dir={lab.results}",
        f"cache_dir={lab.cache}",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with pytest.raises((TreebankError, ConfigError)) as info:
        run(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(fc.expected_error(case, path)) and case.phrase in message, message
    assert not list(lab.results.glob("runs/*/summary.json"))  # no record for a run never started


def test_tolerated_variants_give_the_same_record(lab: Lab) -> None:
    assert_handled(fc.tolerated_variants(lab))


def test_bad_settings_name_the_key_and_start_nothing(lab: Lab) -> None:
    # One per kind of mistake; the suite also tries a bad choice value and a negative lr.
    # A name no case has raises (faultlib.select) rather than dropping out.
    kinds = ["unknown group option", "wrong type", "lr = 0", "batch_size = 0", "epochs = 0",
             "data path missing"]  # fmt: skip
    outcomes = fc.bad_configs(lab, kinds)
    assert len(outcomes) == len(kinds)
    assert_handled(*outcomes)


# -- interruption ----------------------------------------------------------------------------
def test_sigkill_after_a_checkpoint_then_rerun_equals_uninterrupted(lab: Lab) -> None:
    assert_handled(fc.kill_after_checkpoint(lab))


def test_sigterm_mid_epoch_then_rerun_equals_uninterrupted(lab: Lab) -> None:
    assert_handled(fc.signal_at(lab, signal.SIGTERM, "mid-epoch"))


def test_ctrl_c_during_data_loading_then_rerun_equals_uninterrupted(lab: Lab) -> None:
    assert_handled(fc.signal_at(lab, signal.SIGINT, "during data loading"))


def test_stale_temporaries_from_a_kill_are_ignored_and_removed(lab: Lab) -> None:
    assert_handled(fc.leftover_temporaries(lab))


# -- corruption ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["summary.json", "metrics.jsonl"])
def test_damaged_finished_record_is_redone(lab: Lab, name: str) -> None:
    assert_handled(fc.damaged_record(lab, name))


def test_truncated_checkpoint_restarts_the_run(lab: Lab) -> None:
    assert_handled(fc.damaged_checkpoint(lab))


def _damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[:-40])
    else:  # an edit that keeps the file well-formed: its first digit changed
        data = path.read_bytes()
        i = next(k for k, byte in enumerate(data) if chr(byte).isdigit())
        path.write_bytes(data[:i] + (b"7" if data[i : i + 1] != b"7" else b"8") + data[i + 1 :])


@pytest.mark.parametrize(
    ("name", "how"),
    [(n, h) for n in ("config.yaml", "metrics.jsonl") for h in ("delete", "truncate", "edit")],
)
def test_integrity_check_rejects_each_damaged_file(lab: Lab, name: str, how: str) -> None:
    results = lab.seed_results()
    run_id = reference_id(lab, "sgd")
    record = RunDir(results, run_id)
    assert record.finished_summary() is not None and fingerprint(results, run_id) is not None
    _damage(record.path / name, how)
    with pytest.warns(UserWarning, match=f"record is damaged .*{name}.*; the run will be redone"):
        assert record.finished_summary() is None
    assert fingerprint(results, run_id) is None  # the fault suite counts it as lost


@pytest.mark.parametrize("how", ["delete", "truncate", "edit"])
def test_uncommitted_predictions_never_damage_a_record(lab: Lab, how: str) -> None:
    """predictions.conllu is not committed (.gitignore): a clone lacks it, so its absence or
    change must not make a finished run count as damaged and be retrained."""
    import warnings

    results = lab.seed_results()
    run_id = reference_id(lab, "sgd")
    record = RunDir(results, run_id)
    before = record.finished_summary()
    assert before is not None and "predictions.conllu" in before["record_files"]
    _damage(record.path / "predictions.conllu", how)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert record.finished_summary() == before


def test_feature_cache_warns_when_stale_or_truncated(tmp_path: Path) -> None:
    """The cache key holds the data checksum; the sidecar makes the stale case visible."""
    cache, train = tmp_path / "cache", str(tmp_path / "train.conllu")
    built: list[int] = []

    def build(value: int):
        built.append(value)
        return np.full((3, 48), value, dtype=np.int32), np.zeros(3, dtype=np.int16)

    load_or_build(cache, "k1", lambda: build(1), source=(train, "sha-old"))
    assert load_or_build(cache, "k1", lambda: build(9), source=(train, "sha-old"))[2]  # a hit
    with pytest.warns(UserWarning, match="earlier version of .*train.conllu"):
        features, _, hit = load_or_build(cache, "k2", lambda: build(2), source=(train, "sha-new"))
    assert not hit and features[0, 0] == 2 and built == [1, 2]
    assert sorted(p.name for p in cache.iterdir()) == ["train-k2.json", "train-k2.npz"]
    sidecar = json.loads((cache / "train-k2.json").read_text())
    assert sidecar == {"source": str(Path(train).resolve()), "sha256": "sha-new"}

    # Another data selection from the same file version is not stale.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_or_build(cache, "k3", lambda: build(3), source=(train, "sha-new"))

    npz = cache / "train-k2.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable .*rebuilding"):
        features, _, hit = load_or_build(cache, "k2", lambda: build(4), source=(train, "sha-new"))
    assert not hit and features[0, 0] == 4
    assert load_or_build(cache, "k2", lambda: build(5), source=(train, "sha-new"))[2]


# -- concurrency, storage, tracking, numerical ------------------------------------------------
def test_two_sweeps_at_once_train_each_run_once(lab: Lab) -> None:
    assert_handled(fc.concurrent_sweeps(lab))


def test_writability_probes_of_one_run_do_not_race(tmp_path: Path) -> None:
    """Both sweeps probe a run's folder before either takes its lock. With one shared probe
    file, one process's cleanup removed the other's probe and it failed with "results folder
    is not writable" (seen in about 1 of 15 concurrent create() calls)."""
    errors: list[OSError] = []

    def probe() -> None:
        for _ in range(100):
            try:
                RunDir(tmp_path, "run").create()
            except OSError as err:
                errors.append(err)

    threads = [threading.Thread(target=probe) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert not list((tmp_path / "runs" / "run").iterdir())  # no probe left behind


def test_read_only_results_folder_fails_before_training(lab: Lab) -> None:
    assert_handled(fc.read_only_results(lab))


def test_full_results_folder_names_the_failing_write_and_recovers(lab: Lab) -> None:
    assert_handled(fc.full_results_mid_run(lab))


def test_wandb_online_without_network_is_bounded_offline_disabled_stay_local(lab: Lab) -> None:
    assert_handled(*fc.wandb_modes(lab))


def test_diverging_run_is_recorded_and_reported(lab: Lab) -> None:
    assert_handled(fc.diverging_run(lab))
