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
from omegaconf import MISSING, DictConfig, OmegaConf

from sm3repro import study
from sm3repro.data.vocab import LABELS, POS_COLUMNS
from sm3repro.metrics.attachment import LABEL_OPTIONS, PUNCT_OPTIONS
from sm3repro.optim.catalog import IMPLS, names, paper_grid, sparse_rows_grid
from sm3repro.optim.registry import check_optimizer_config
from sm3repro.optim.sm3.optimizer import COVERS
from sm3repro.parser.model import ACTIVATION, ACTIVATIONS, DROPOUT


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
    embed_dim: int = study.EMBED_DIM
    hidden: list[int] = field(default_factory=lambda: list(study.HIDDEN))
    activation: str = ACTIVATION
    dropout: float = DROPOUT
    word_dropout: float = 0.0


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float | None = study.LR  # None: an lr_table lookup found no entry (validate says so)
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
    torch_threads: int = 2  # pinned: unpinned OpenMP threads on a busy 2-core box ruin timings
    device: str = "cpu"  # the study measures CPU; "cuda" when asked and available
    results_dir: str = "results"  # conf/config.yaml: $SM3REPRO_RESULTS, else results
    cache_dir: str = "cache"  # conf/config.yaml: $SM3REPRO_CACHE, else cache
    experiment_name: str = "default"  # the W&B group and the report's label for the sweep
    log_every: int = 100  # steps between logged losses (per-step logging slows a small model)
    checkpoint: bool = True  # model, optimizer and RNG state after every epoch (resumable)
    debug: bool = False  # tracebacks instead of one-line errors
    # What train.main returns to a Hydra sweeper (Optuna, ...): a DEV score, never test.
    # {final,best_dev}.dev.{las,uas}_{macro,micro}; best_dev: the epoch of highest dev LAS micro.
    optimized_metric: str = "final.dev.las_macro"
    # Added after the study's sweep was recorded: they enter a run's id only when set away
    # from these defaults (records.ADDED_LATER), so earlier records keep their ids.
    lr_schedule: str = "constant"  # per-step decay to 0 by the last step: linear or cosine
    ema_decay: float | None = None  # evaluate an exponential moving average of the weights
    # Row-sparse word-embedding gradients where the optimizer is exact with them (off in the
    # study's protocol; optim.registry.sparse_rows_config decides, the run's optimizer_impl says)
    sparse_rows: bool = False
    # Per-cell learning rates, {optimizer: {b<batch>: lr}}, that an experiment's optimizer.lr
    # looks up (conf/experiment/tuned_lr.yaml); only the resolved lr enters the run id.
    lr_table: dict[str, dict[str, float]] | None = None
    # Measurement only (training is bit-identical either way, so neither enters the run id):
    # dev scored this many times per epoch, evenly spaced, the last at the epoch's end (the
    # time axis of time-to-target); every step's time split into phases (step_timing).
    dev_evals_per_epoch: int = 10
    time_phases: bool = True
    # The timed arm a run belongs to (experiment=timed: "timed"); part of the run id when set,
    # so a timed rerun of a cell is its own record beside the arm whose config it repeats.
    timing_arm: str | None = None


ConfigStore.instance().store(name="schema", node=RunConfig)
# The paper and smoke experiments sweep the catalog's paper grid: ${sm3repro.paper_grid:}.
OmegaConf.register_new_resolver("sm3repro.paper_grid", lambda: ",".join(paper_grid()), replace=True)
# experiment=fastest_exact sweeps the ones whose fastest exact implementation is sparse rows.
OmegaConf.register_new_resolver(
    "sm3repro.sparse_rows_grid", lambda: ",".join(sparse_rows_grid()), replace=True
)

# Every key with a fixed set of values, taken from the module that defines them. Keys in
# NULLABLE may also be null (unset).
CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": ("conllu", "conllx"),
    "data.pos_column": POS_COLUMNS,
    "data.labels": LABELS,
    "data.eval_punct": PUNCT_OPTIONS,
    "data.eval_labels": LABEL_OPTIONS,
    "model.activation": ACTIVATIONS,
    "optimizer.name": names(),
    "optimizer.cover": COVERS,
    "optimizer.impl": IMPLS,
    "logger.name": ("wandb", "none"),
    "logger.mode": ("online", "offline", "disabled", "dryrun"),
    "device": ("cpu", "cuda"),
    "lr_schedule": ("constant", "linear", "cosine"),
}
NULLABLE = {"optimizer.cover", "optimizer.impl"}


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
            f"unknown config key {unknown[0]}; see conf/ and sm3repro/run/config.py for the keys"
        )
    _check_values(cfg)
    try:  # keys that do not apply to the optimizer, and the optimizer class's own value checks
        check_optimizer_config(cfg.optimizer)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    _check_files(cfg)
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "device='cuda' was asked for but no CUDA device is available; use device=cpu"
            )


def _check_values(cfg: DictConfig) -> None:
    """Choices from fixed sets, and the ranges numbers must lie in."""
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed and not (value is None and key in NULLABLE):
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(allowed)}")
    if cfg.optimizer.lr is None:  # an lr_table lookup found no entry for this cell
        raise ConfigError(
            f"optimizer.lr is unset: lr_table has no lr for {cfg.optimizer.name} at batch "
            f"{cfg.batch_size}: `python -m sm3repro.arms.lr_selection` lists the lr-grid runs it "
            "still needs; after them, `... --write-tuned` writes its lr"
        )
    positive = {
        "optimizer.lr": cfg.optimizer.lr,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "torch_threads": cfg.torch_threads,
        "log_every": cfg.log_every,
        "dev_evals_per_epoch": cfg.dev_evals_per_epoch,
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


def _check_files(cfg: DictConfig) -> None:
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
