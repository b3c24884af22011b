"""A run's identity: the part of its resolved config that decides its results, and its id."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Keys that change how or where a run is logged, not what it computes.
# lr_table is a lookup table for optimizer.lr: the lr it yields is part of the identity.
_NOT_IDENTITY = {"results_dir", "cache_dir", "logger", "torch_threads", "log_every",
                 "checkpoint", "debug", "experiment_name", "optimized_metric", "lr_table",
                 "dev_evals_per_epoch", "time_phases"}  # fmt: skip


# Keys added to the schema after runs were recorded, with their defaults: at the default they
# are left out of the identity, so adding a key does not change (and redo) every earlier run.
ADDED_LATER = {"lr_schedule": "constant", "ema_decay": None, "sparse_rows": False,
               "timing_arm": None}  # fmt: skip


def run_identity(config: dict) -> dict:
    """The part of a resolved config that decides a run's results.

    Data paths enter by file name only, so moving the data folder keeps run ids stable.
    """
    ident = {
        k: v
        for k, v in config.items()
        if k not in _NOT_IDENTITY and not (k in ADDED_LATER and v == ADDED_LATER[k])
    }
    data = dict(ident.get("data", {}))
    for split in ("train", "dev", "test", "embeddings"):
        if data.get(split):
            data[split] = Path(data[split]).name
    data.pop("dir", None)
    ident["data"] = data
    return ident


def run_id_for(config: dict) -> str:
    """``<optimizer>-b<batch>-s<seed>-<hash>``: readable, and equal for equal configs."""
    ident = run_identity(config)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    return f"{config['optimizer']['name']}-b{config['batch_size']}-s{config['seed']}-{digest}"
