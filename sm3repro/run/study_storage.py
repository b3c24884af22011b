"""Make the folder of a sweeper's SQLite storage before the sweeper opens it.

``hparams_search=best_parser`` stores its Optuna study at
``sqlite:///${results_dir}/tuning/best_parser.db``. SQLite creates the database file but not
its folder, so a search with a fresh ``results_dir`` ended in "unable to open database file".
A Hydra callback, wired in ``conf/config.yaml``: Hydra calls ``on_multirun_start`` before it
instantiates the sweeper (which opens the storage in ``sweep()``), with the storage URL
already resolvable from the composed config. Only multiruns are touched, and only local
SQLite URLs; every other storage (none, in-memory, a database server) is left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLAlchemy SQLite URL (``sqlite:///rel.db``,
    ``sqlite:////abs.db``, ``sqlite+pysqlite:///...?opts``), None for any other URL or an
    in-memory database."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] != "sqlite":
        return None
    # The third slash ends the (empty) host: what follows is the path, absolute if it
    # starts with a fourth.
    path = rest.removeprefix("/").split("?", 1)[0]
    if path in ("", ":memory:") or path.startswith("file:"):
        return None  # in memory, or a URI filename SQLite resolves itself
    return Path(path)


class StudyStorageFolder(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
        if not isinstance(storage, str):  # the basic sweeper has none; Optuna's may be null
            return
        path = sqlite_file(storage)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
