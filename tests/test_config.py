"""Every config group composes, and bad values fail before training with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from sm3repro.config import ConfigError, validate
from sm3repro.optim import build_optimizer
from sm3repro.parser.model import ChenManningParser
from sm3repro.paths import config_dir

GROUPS = {
    "data": ["ud_ewt", "conllx"],
    "model": ["chen_manning"],
    "optimizer": ["sgd", "adagrad", "adam", "sm3_i", "sm3_ii"],
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


@pytest.mark.parametrize("name", GROUPS["optimizer"])
def test_optimizer_configs_build_at_the_study_lr(name, ewt_overrides):
    cfg = make_cfg(f"optimizer={name}", *ewt_overrides)
    assert cfg.optimizer.lr == 0.01
    model = ChenManningParser(50, 10, 10, 9)
    optimizer, impl = build_optimizer(model.parameters(), cfg.optimizer)
    assert optimizer.param_groups[0]["lr"] == 0.01 and impl


def test_defaults_follow_the_study(ewt_overrides):
    cfg = make_cfg(*ewt_overrides)
    assert cfg.epochs == 10 and cfg.optimizer.name == "sm3_ii" and cfg.device == "cpu"
    assert list(cfg.model.hidden) == [200, 200] and cfg.model.embed_dim == 50


def test_paper_experiment_sweeps_the_grid(ewt_overrides):
    cfg = make_cfg("experiment=paper", *ewt_overrides, return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.optimizer.split(",") == ["sm3_ii", "sm3_i", "sgd", "adagrad", "adam"]
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
    ],
)
def test_bad_values_fail_with_the_key_named(override, key, ewt_overrides):
    cfg = make_cfg(override, *ewt_overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


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


COMMITTED_RUNS = Path(__file__).resolve().parent.parent / "results" / "runs"


def test_committed_sweep_keeps_its_run_ids(ewt_overrides):
    """Keys added to the schema later must not rename (and so redo) recorded runs."""
    import json

    from sm3repro.records import run_id_for

    committed = sorted(
        p.parent.name
        for p in COMMITTED_RUNS.glob("*/summary.json")
        if json.loads(p.read_text())["experiment"] == "paper"
    )
    assert len(committed) >= 20
    for run_id in committed:
        name, batch, seed, _ = run_id.split("-")
        cfg = make_cfg("experiment=paper", f"optimizer={name}", f"batch_size={batch[1:]}",
                       f"seed={seed[1:]}", *ewt_overrides)  # fmt: skip
        assert run_id_for(OmegaConf.to_container(cfg, resolve=True)) == run_id


def test_added_keys_enter_the_run_id_only_when_set(ewt_overrides):
    from sm3repro.records import run_id_for

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

    from sm3repro.train import _lr_scheduler

    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=0.01)
    scheduler = _lr_scheduler(optimizer, schedule, total_steps=100)
    seen = []
    for _ in range(100):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(0.01) and seen[50] == pytest.approx(0.005, abs=1e-4)
    assert all(a >= b for a, b in zip(seen, seen[1:], strict=False))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert _lr_scheduler(optimizer, "constant", 100) is None
