"""Every config group composes, and bad values fail before training with the key named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from sm3repro import study
from sm3repro.optim import CATALOG, build_optimizer
from sm3repro.optim.catalog import paper_grid
from sm3repro.parser.model import ChenManningParser
from sm3repro.paths import config_dir
from sm3repro.run.config import ConfigError, validate

GROUPS = {
    "data": ["ud_ewt", "conllx"],
    "model": ["chen_manning"],
    "optimizer": list(CATALOG),
    "logger": ["wandb", "none"],
    "experiment": ["paper", "smoke", "best_parser"],
}


def make_cfg(*overrides: str, return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


@pytest.fixture
def ewt_overrides(ewt_dir: Path) -> list[str]:
    return [f"data.dir={ewt_dir}"]


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes(group, option, ewt_overrides):
    cfg = make_cfg(f"{group}={option}", *ewt_overrides)
    assert cfg[group]["name"] == option if group not in ("experiment",) else cfg.experiment_name
    if group != "data":  # conllx points at PTB files that are not here
        validate(cfg)


@pytest.mark.parametrize("name", list(CATALOG))
def test_every_catalog_entry_composes_validates_and_builds_at_the_study_lr(name, ewt_overrides):
    spec = CATALOG[name]
    cfg = make_cfg(f"optimizer={name}", *ewt_overrides)
    validate(cfg)
    assert cfg.optimizer.name == name and cfg.optimizer.lr == study.LR == 0.01
    set_keys = {key for key, value in cfg.optimizer.items() if value is not None}
    assert set_keys - {"name", "lr", "impl"} <= spec.keys  # its yaml sets only keys it takes
    model = ChenManningParser(50, 10, 10, 9)
    optimizer, impl = build_optimizer(model.parameters(), cfg.optimizer)
    assert type(optimizer) is spec.cls and impl
    assert optimizer.param_groups[0]["lr"] == study.LR
    assert spec.label and spec.style["color"]


def test_defaults_follow_the_study(ewt_overrides):
    cfg = make_cfg(*ewt_overrides)
    assert cfg.epochs == 10 and cfg.optimizer.name == "sm3_ii" and cfg.device == "cpu"
    assert list(cfg.model.hidden) == [200, 200] and cfg.model.embed_dim == 50
    assert (cfg.model.embed_dim, tuple(cfg.model.hidden)) == (study.EMBED_DIM, study.HIDDEN)
    assert cfg.optimizer.lr == 0.01 == study.LR


def test_paper_experiment_sweeps_the_grid(ewt_overrides):
    cfg = make_cfg("experiment=paper", *ewt_overrides, return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert tuple(params.optimizer.split(",")) == paper_grid()
    assert set(paper_grid()) == {_committed_runs()[run]["optimizer"] for run in _paper_runs()}
    assert params.batch_size.split(",") == ["64", "512"]
    assert params.seed.split(",") == ["0", "1", "2"]
    assert cfg.epochs == 10 and cfg.optimizer.lr == 0.01


def test_launchers_compose(ewt_overrides):
    joblib = make_cfg("hydra/launcher=joblib", *ewt_overrides, return_hydra_config=True)
    assert "joblib" in joblib.hydra.launcher._target_.lower()
    slurm = make_cfg("hydra/launcher=submitit_slurm_sm3", *ewt_overrides, return_hydra_config=True)
    assert "slurm" in slurm.hydra.launcher._target_.lower()
    assert slurm.hydra.launcher.cpus_per_task == 2


def test_unknown_group_option_lists_the_allowed_ones():
    with pytest.raises(ConfigCompositionException) as err:
        make_cfg("optimizer=rmsprop")
    message = str(err.value)
    assert "optimizer" in message and "sm3_ii" in message and "adam" in message


def test_unknown_key_and_wrong_type_name_the_key(ewt_overrides):
    with pytest.raises(ConfigCompositionException) as err:
        make_cfg("optimizer.learning_rate=0.1")
    assert "learning_rate" in str(err.value) + str(err.value.__cause__)
    for forced in ("+optimizer.learning_rate=0.1", "+learning_rate=0.1"):  # `+` skips Hydra's check
        with pytest.raises(ConfigError, match="learning_rate"):
            validate(make_cfg(forced, *ewt_overrides))
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        make_cfg("batch_size=lots")
    text = str(err.value) + str(err.value.__cause__)
    assert "batch_size" in text


@pytest.mark.parametrize(
    "override,key",
    [
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.lr=-0.1", "optimizer.lr"),
        ("batch_size=0", "batch_size"),
        ("epochs=0", "epochs"),
        ("model.activation=gelu", "model.activation"),
        ("data.eval_punct=sometimes", "data.eval_punct"),
        ("device=tpu", "device"),
        ("lr_schedule=step", "lr_schedule"),
        ("ema_decay=1.0", "ema_decay"),
        ("data.pos_column=feats", "data.pos_column"),
        ("data.labels=coarse", "data.labels"),
        ("optimizer.cover=bad", "optimizer.cover"),
        ("optimizer.impl=turbo", "optimizer.impl"),
        ("optimizer.impl=foreach", "optimizer.impl"),  # SM3 has no foreach implementation
        ("optimizer.momentum=1.5", "optimizer.momentum"),  # SM3's own check
        ("optimizer.eps=-1", "optimizer.eps"),
    ],
)
def test_bad_values_fail_with_the_key_named(override, key, ewt_overrides):
    cfg = make_cfg(override, *ewt_overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


INAPPLICABLE = [
    ("sm3_ii", "optimizer.betas=[0.9,0.99]", "betas"),
    ("sm3_i", "optimizer.weight_decay=0.1", "weight_decay"),
    ("adam", "optimizer.cover=dims", "cover"),
    ("sgd", "optimizer.eps=1e-8", "eps"),
    ("adagrad", "optimizer.momentum=0.9", "momentum"),
]


@pytest.mark.parametrize("name,override,key", INAPPLICABLE)
def test_keys_that_do_not_apply_to_the_optimizer_fail_validation(
    name, override, key, ewt_overrides
):
    cfg = make_cfg(f"optimizer={name}", override, *ewt_overrides)
    with pytest.raises(ConfigError, match=rf"optimizer\.{key} does not apply to .*={name}\b"):
        validate(cfg)


def test_a_bad_optimizer_config_fails_before_any_data_is_loaded(
    tmp_path, ewt_overrides, monkeypatch
):
    from sm3repro.run import train

    def must_not_load(*args, **kwargs):
        raise AssertionError("data loaded before the optimizer config was checked")

    monkeypatch.setattr(train, "load_data_once", must_not_load)
    monkeypatch.setattr(train, "load_data_once", must_not_load)
    cfg = make_cfg("optimizer=sm3_ii", "optimizer.betas=[0.9,0.99]", "logger=none",
                   f"results_dir={tmp_path}", *ewt_overrides)  # fmt: skip
    with pytest.raises(ConfigError, match=r"optimizer\.betas does not apply to .*=sm3_ii"):
        train.run(cfg)
    assert list(tmp_path.iterdir()) == []  # no run folder


@pytest.mark.slow
def test_the_cli_rejects_an_inapplicable_key_in_one_line_without_a_run_folder(
    tmp_path, ewt_overrides
):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "sm3repro.train", "optimizer=sm3_ii",
           "optimizer.betas=[0.9,0.99]", "logger=none", f"results_dir={tmp_path / 'results'}",
           f"hydra.run.dir={tmp_path / 'hydra'}", *ewt_overrides]  # fmt: skip
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "sm3repro: error: optimizer.betas does not apply to optimizer.name=sm3_ii "
        "(it takes: cover, eps, momentum)"
    ]
    assert not (tmp_path / "results").exists()


def test_missing_data_file_names_the_key(tmp_path):
    cfg = make_cfg(f"data.dir={tmp_path}")
    with pytest.raises(ConfigError, match=r"data\.train") as err:
        validate(cfg)
    assert "make data" in str(err.value)


def test_conllx_points_at_the_study_files(tmp_path):
    cfg = make_cfg("data=conllx", f"data.dir={tmp_path}")
    assert OmegaConf.select(cfg, "data.train").endswith("train.conll")
    assert cfg.data.pos_column == "xpos"  # column 4 of that data is gold UPOS


def test_experiments_override_the_top_level_defaults(ewt_overrides):
    smoke = make_cfg("experiment=smoke", *ewt_overrides)
    assert smoke.epochs == 2 and smoke.experiment_name == "smoke"
    assert smoke.data.max_train_sentences == 300
    best = make_cfg("experiment=best_parser", *ewt_overrides)
    assert best.optimizer.name == "adam" and best.experiment_name == "best_parser"
    assert make_cfg("experiment=smoke", "epochs=3", *ewt_overrides).epochs == 3  # CLI still wins


COMMITTED_RUNS = Path(__file__).resolve().parents[2] / "results" / "runs"


def _committed_runs() -> dict[str, dict]:
    """Run id -> summary of every committed record."""
    import json

    return {p.parent.name: json.loads(p.read_text()) for p in COMMITTED_RUNS.glob("*/summary.json")}


def _paper_runs() -> list[str]:
    return sorted(r for r, summary in _committed_runs().items() if summary["experiment"] == "paper")


@pytest.mark.parametrize("experiment", ["paper", "best_parser"])
def test_committed_records_keep_their_run_ids(experiment, ewt_overrides):
    """Keys added to the schema later, and defaults moved between files, must not rename (and so
    redo) recorded runs."""
    from sm3repro.record.identity import run_id_for

    committed = sorted(r for r, s in _committed_runs().items() if s["experiment"] == experiment)
    assert len(committed) >= {"paper": 30, "best_parser": 1}[experiment]
    for run_id in committed:
        name, batch, seed, _ = run_id.split("-")
        cfg = make_cfg(f"experiment={experiment}", f"optimizer={name}",
                       f"batch_size={batch[1:]}", f"seed={seed[1:]}", *ewt_overrides)  # fmt: skip
        assert run_id_for(OmegaConf.to_container(cfg, resolve=True)) == run_id
    if experiment == "best_parser":
        assert committed == ["adam-b256-s0-fd54d92d1c"]


def test_added_keys_enter_the_run_id_only_when_set(ewt_overrides):
    from sm3repro.record.identity import run_id_for

    def run_id(*overrides: str) -> str:
        cfg = make_cfg("optimizer=adam", *overrides, *ewt_overrides)
        return run_id_for(OmegaConf.to_container(cfg, resolve=True))

    plain = run_id()
    assert run_id("lr_schedule=constant", "ema_decay=null") == plain
    ids = {run_id("lr_schedule=linear"), run_id("lr_schedule=cosine"), run_id("ema_decay=0.99")}
    assert len(ids) == 3 and plain not in ids


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_schedules_decay_to_zero_by_the_last_step(schedule):
    import torch

    from sm3repro.run.state import lr_scheduler

    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=0.01)
    scheduler = lr_scheduler(optimizer, schedule, total_steps=100)
    seen = []
    for _ in range(100):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(0.01) and seen[50] == pytest.approx(0.005, abs=1e-4)
    assert all(a >= b for a, b in zip(seen, seen[1:], strict=False))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert lr_scheduler(optimizer, "constant", 100) is None
