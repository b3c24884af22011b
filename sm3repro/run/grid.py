"""Which runs belong to an experiment: the run ids of its sweep grid, not the labels in records.

An experiment is ``conf/experiment/<name>.yaml``; its ``hydra.sweeper.params`` is the grid that
``python -m sm3repro.train -m experiment=<name>`` runs. Each grid point's config is composed the
way the sweep composes it and hashed with :func:`sm3repro.record.identity.run_id_for`, so a record made
by any other command with the same config (the same run id, another ``experiment`` label) is
still a member, and a record under the experiment's label but outside its grid is not.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from sm3repro import paths
from sm3repro.record.identity import run_id_for


def config_dir() -> Path:
    """The project's Hydra config folder (the checkout's conf/, or the wheel's copy)."""
    import sm3repro.run.config  # noqa: F401 - registers the schema and resolvers the configs use

    return paths.config_dir()


def has_grid(experiment: str) -> bool:
    """Whether ``experiment`` names an experiment config (else only labels say who is in it)."""
    return (config_dir() / "experiment" / f"{experiment}.yaml").is_file()


@functools.cache  # composing tens of configs takes seconds; the report asks more than once
def _grid_configs(experiment: str, overrides: tuple[str, ...], conf: Path) -> tuple[dict, ...]:
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        base = [f"experiment={experiment}", *overrides]
        sweep = compose("config", overrides=base, return_hydra_config=True)
        params = OmegaConf.select(sweep, "hydra.sweeper.params") or {}
        # Expand the grid with the sweeper Hydra itself uses, so ranges, choice() and the job
        # order are exactly the sweep's (command-line values replace swept ones); a config
        # without params is a single run.
        parsed = OverridesParser.create().parse_overrides(
            [f"{key}={value}" for key, value in params.items()] + base
        )
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        return tuple(
            OmegaConf.to_container(compose("config", overrides=job), resolve=True) for job in jobs
        )


def grid_configs(experiment: str, overrides: Sequence[str] = ()) -> tuple[dict, ...]:
    """The resolved config of every point of ``experiment``'s grid, in sweep order (shared:
    do not modify them)."""
    return _grid_configs(experiment, tuple(overrides), config_dir())


def grid_run_ids(
    experiment: str, overrides: Sequence[str] = (), optimizers: Collection[str] | None = None
) -> list[str]:
    """Run ids of every point of ``experiment``'s grid, in sweep order; with ``optimizers``,
    only the points that train one of them.

    ``overrides`` are the ones the sweep was started with besides ``experiment=<name>``
    (e.g. ``data.max_train_sentences=300``); keys that do not enter the run id do not matter.
    """
    return [
        run_id_for(config)
        for config in grid_configs(experiment, overrides)
        if optimizers is None or config["optimizer"]["name"] in optimizers
    ]
