"""Typed schema for the Hydra config, and the checks Hydra's types cannot express.

The schema is registered with Hydra's ConfigStore as ``schema`` and is the first entry of
``conf/config.yaml``'s defaults, so an unknown key or a wrong type fails at composition with the
key named. ``validate`` then checks values (lr > 0, batch_size >= 1, files exist, ...).
"""

from __future__ import annotations

from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from sm3repro.data.vocab import POS_COLUMNS


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


@dataclass
class DataConfig:
    name: str = MISSING
    format: str = "conllu"
    dir: str = MISSING
    train: str = MISSING
    dev: str = MISSING
    test: str = MISSING
    pos_column: str = "xpos"
    labels: str = "full"
    lowercase: bool = True
    min_word_freq: int = 2
    embeddings: str | None = None
    max_train_sentences: int | None = None
    max_eval_sentences: int | None = None
    eval_punct: str = "include"
    eval_labels: str = "universal"


@dataclass
class ModelConfig:
    name: str = "chen_manning"
    embed_dim: int = 50
    hidden: list[int] = field(default_factory=lambda: [200, 200])
    activation: str = "relu"
    dropout: float = 0.5
    word_dropout: float = 0.0


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 0.01
    momentum: float | None = None
    eps: float | None = None
    betas: list[float] | None = None
    weight_decay: float | None = None
    cover: str | None = None
    impl: str | None = None


@dataclass
class LoggerConfig:
    name: str = "wandb"
    mode: str = "offline"
    project: str = "sm3repro"
    entity: str | None = None
    dir: str = "."
    init_timeout: float = 30.0


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    batch_size: int = 512
    epochs: int = 10
    seed: int = 0
    torch_threads: int = 2
    device: str = "cpu"
    results_dir: str = "results"
    cache_dir: str = "cache"
    experiment_name: str = "default"
    log_every: int = 100
    checkpoint: bool = True
    debug: bool = False
    optimized_metric: str = "final.dev.las_macro"  # what train.main returns to a sweeper
    # Added after the study's sweep was recorded: they enter a run's id only when set away
    # from these defaults (records.ADDED_LATER), so earlier records keep their ids.
    lr_schedule: str = "constant"  # per-step decay to 0 by the last step: linear or cosine
    ema_decay: float | None = None  # evaluate an exponential moving average of the weights


ConfigStore.instance().store(name="schema", node=RunConfig)

CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": ("conllu", "conllx"),
    "data.pos_column": POS_COLUMNS,
    "data.labels": ("full", "universal"),
    "data.eval_punct": ("include", "upos", "ptb"),
    "data.eval_labels": ("universal", "full"),
    "model.activation": ("relu", "cube", "tanh"),
    "optimizer.name": ("sgd", "adagrad", "adam", "sm3_i", "sm3_ii"),
    "logger.name": ("wandb", "none"),
    "logger.mode": ("online", "offline", "disabled", "dryrun"),
    "device": ("cpu", "cuda"),
    "lr_schedule": ("constant", "linear", "cosine"),
}


def _get(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _unknown_keys(cfg: DictConfig, schema: type, prefix: str = "") -> list[str]:
    """Keys in ``cfg`` that the schema lacks (``+key=value`` overrides bypass Hydra's check)."""
    from dataclasses import fields, is_dataclass

    known = {f.name: f for f in fields(schema)}
    unknown = []
    for key in cfg:
        if key not in known:
            unknown.append(f"{prefix}{key}")
        else:
            factory = known[key].default_factory
            default = factory if factory is not NO_DEFAULT else None
            if default is not None and is_dataclass(sample := default()):
                unknown += _unknown_keys(cfg[key], type(sample), f"{prefix}{key}.")
    return unknown


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key, its value and what is allowed."""
    unknown = _unknown_keys(cfg, RunConfig)
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]}; see conf/ and sm3repro/config.py for the keys"
        )
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(allowed)}")
    positive = {
        "optimizer.lr": cfg.optimizer.lr,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "torch_threads": cfg.torch_threads,
        "log_every": cfg.log_every,
        "model.embed_dim": cfg.model.embed_dim,
        "data.min_word_freq": cfg.data.min_word_freq,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key}={value} must be > 0")
    for key in ("data.max_train_sentences", "data.max_eval_sentences"):
        value = _get(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key}={value} must be >= 1 or null")
    if len(cfg.model.hidden) != 2 or min(cfg.model.hidden) < 1:
        raise ConfigError(f"model.hidden={list(cfg.model.hidden)} must be two positive sizes")
    if cfg.model.word_dropout < 0:
        raise ConfigError(f"model.word_dropout={cfg.model.word_dropout} must be >= 0")
    if cfg.ema_decay is not None and not 0 < cfg.ema_decay < 1:
        raise ConfigError(f"ema_decay={cfg.ema_decay} must be in (0, 1) or null")
    if not 0 <= cfg.model.dropout < 1:
        raise ConfigError(f"model.dropout={cfg.model.dropout} must be in [0, 1)")
    for split in ("train", "dev", "test"):
        path = Path(cfg.data[split])
        if path.is_dir():
            raise ConfigError(
                f"data.{split}={str(path)!r}: is a directory, expected a treebank file"
            )
        if not path.is_file():
            hint = (
                " (run `make data`, or set data.dir / SM3REPRO_DATA)"
                if cfg.data.name == "ud_ewt"
                else ""
            )
            raise ConfigError(f"data.{split}={str(path)!r}: no such file{hint}")
    if cfg.data.embeddings is not None and not Path(cfg.data.embeddings).is_file():
        raise ConfigError(f"data.embeddings={cfg.data.embeddings!r}: no such file")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "device='cuda' was asked for but no CUDA device is available; use device=cpu"
            )
