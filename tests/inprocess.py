"""Train one tiny configuration in this process through ``sm3repro.run.train.run`` (public entry).

In-process, so a test can wrap the evaluation or the model with monkeypatch and see what the
training loop scored and measured. 200 training sentences, 100 dev/test, one thread.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from sm3repro.run import train

TINY = [
    "data.max_train_sentences=200",
    "data.max_eval_sentences=100",
    "torch_threads=1",
    "log_every=5",
    "logger=none",
]


def train_tiny(tmp_path: Path, ewt_dir: Path, *overrides: str) -> dict:
    """The summary of one run; torch's thread count is restored afterwards."""
    args = [
        *TINY,
        f"data.dir={ewt_dir}",
        f"results_dir={tmp_path / 'results'}",
        f"cache_dir={tmp_path / 'cache'}",
        *overrides,
    ]
    with initialize_config_dir(config_dir=train.CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=args)
    threads = torch.get_num_threads()
    try:
        return train.run(cfg)
    finally:
        torch.set_num_threads(threads)
