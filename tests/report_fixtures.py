"""Synthetic but realistic run records for the report tests (no training involved).

By default every one of the study's claims holds in the generated numbers, so a test can flip
one verdict by changing one quantity with ``tweaks`` or widening the seed spread with ``noise``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from sm3repro.record.schema import (
    BestDev,
    EpochRow,
    FinalScores,
    Resources,
    RunSummary,
    Scores,
    Status,
    StepRow,
)
from sm3repro.run.grid import grid_run_ids, has_grid

OPTIMIZERS = ("sm3_ii", "sm3_i", "sgd", "adagrad", "adam")
N_PARAMS = 1_600_000

# Per (optimizer, batch): the seed-mean of each quantity. Runtime/CPU% follow the study's
# Table I, test macro scores its Table II (SM3-I sits just below SM3-II).
BASE: dict[tuple[str, int], dict[str, float]] = {}
_T1 = {  # cpu%, runtime min, epoch-1 loss, final loss
    ("sm3_ii", 64): (38.3, 8.5, 0.60, 0.200),
    ("sm3_i", 64): (36.0, 8.0, 0.62, 0.201),
    ("sgd", 64): (40.6, 9.1, 0.70, 0.300),
    ("adagrad", 64): (42.8, 10.3, 0.45, 0.198),
    ("adam", 64): (53.7, 13.1, 0.42, 0.230),
    ("sm3_ii", 512): (46.6, 2.8, 0.90, 0.350),
    ("sm3_i", 512): (45.0, 2.7, 0.92, 0.352),
    ("sgd", 512): (46.8, 2.9, 1.10, 0.500),
    ("adagrad", 512): (54.1, 3.9, 0.60, 0.250),
    ("adam", 512): (58.1, 4.0, 0.55, 0.240),
}
_T2 = {
    "sm3_ii": (0.732, 0.783),
    "sm3_i": (0.730, 0.781),
    "sgd": (0.727, 0.778),
    "adagrad": (0.713, 0.769),
    "adam": (0.745, 0.794),
}
_STATE = {
    "sm3_ii": 97_640,
    "sm3_i": 97_640,
    "sgd": 0,
    "adagrad": 4 * N_PARAMS,
    "adam": 8 * N_PARAMS,
}
for (_opt, _bs), (_cpu, _rt, _l1, _lf) in _T1.items():
    _las, _uas = _T2[_opt]
    _drop = 0.0 if _bs == 64 else 0.01  # large batches end a little worse
    BASE[(_opt, _bs)] = dict(
        cpu_percent=_cpu,
        runtime_min=_rt,
        loss_epoch1=_l1,
        train_loss=_lf,
        train_accuracy=1 - _lf / 3,
        las_macro=_las - _drop,
        uas_macro=_uas - _drop,
        peak_rss_mb=700 + _STATE[_opt] / 2**20 * 3,  # state, its gradient copy, temporaries
        optimizer_state_bytes=_STATE[_opt],
        examples_per_s=400_000 / (_rt * 60) * 10,
    )

# Relative seed-to-seed spread per quantity (state bytes are exact: no spread).
NOISE = {"optimizer_state_bytes": 0.0}
DEFAULT_NOISE = 0.005


def _offsets(n: int) -> list[float]:
    """Deterministic per-seed offsets with mean 0 and sample std 1."""
    if n == 1:
        return [0.0]
    raw = [i - (n - 1) / 2 for i in range(n)]
    sd = math.sqrt(sum(r * r for r in raw) / (n - 1))
    return [r / sd for r in raw]


def grid_run_id(optimizer: str, batch_size: int, seed: int, experiment: str) -> str:
    """The run id the experiment's sweep gives this point; outside any grid, a made-up one."""
    prefix = f"{optimizer}-b{batch_size}-s{seed}-"
    if has_grid(experiment):
        matches = [r for r in grid_run_ids(experiment) if r.startswith(prefix)]
        if matches:
            return matches[0]
    tag = hashlib.sha1(f"{optimizer}/{batch_size}/{seed}/{experiment}".encode()).hexdigest()[:8]
    return f"{prefix}{tag}"


def _impl(optimizer: str, sm3_kernel: str | None) -> str:
    if not optimizer.startswith("sm3"):
        return f"torch.optim.{optimizer}"
    kernel = f", kernel={sm3_kernel}" if sm3_kernel else ""
    return f"sm3repro.SM3(variant={optimizer[4:]}, cover=dims{kernel})"


def make_run(
    optimizer: str,
    batch_size: int,
    seed: int,
    values: dict[str, float],
    epochs: int,
    experiment: str = "paper",
    sm3_kernel: str | None = "fused-cpp",
) -> tuple[dict, list[dict]]:
    """One run's summary.json and metrics.jsonl rows from its (already noisy) values, built
    through the run record's schema (sm3repro.record.schema) so they have the keys train writes.
    ``sm3_kernel``: what an SM3 run's optimizer_impl names as its kernel (None: no kernel, as
    in records from before the fused kernel existed)."""
    run_id = grid_run_id(optimizer, batch_size, seed, experiment)
    final_loss, first_loss = values["train_loss"], values["loss_epoch1"]
    metrics: list[StepRow | EpochRow] = []
    for epoch in range(1, epochs + 1):
        # geometric approach from the epoch-1 loss to the final loss
        w = 0.0 if epochs == 1 else 0.35 ** (epoch - 1) * (1 - (epoch - 1) / (epochs - 1))
        loss = final_loss + (first_loss - final_loss) * w
        for step in (50, 100):
            metrics.append(StepRow(epoch=epoch, step=step + (epoch - 1) * 100, loss=loss * 1.05))
        progress = epoch / epochs
        metrics.append(
            EpochRow(epoch=epoch, train_loss=loss, train_accuracy=1 - loss / 3,
                     dev_uas_micro=values["uas_macro"] * progress + 0.01, dev_las_micro=values["las_macro"] * progress + 0.01,
                     dev_uas_macro=values["uas_macro"] * (0.9 + 0.1 * progress), dev_las_macro=values["las_macro"] * (0.9 + 0.1 * progress),
                     epoch_time_s=values["runtime_min"] * 60 / epochs, examples_per_s=values["examples_per_s"],
                     cpu_percent=values["cpu_percent"], system_cpu_percent=None, rss_mb=values["peak_rss_mb"] - 5)
        )  # fmt: skip
    scores = dict(
        uas_micro=values["uas_macro"] + 0.01,
        las_micro=values["las_macro"] + 0.01,
        uas_macro=values["uas_macro"],
        las_macro=values["las_macro"],
    )
    dev = Scores(**{k: v + 0.005 for k, v in scores.items()})
    summary = RunSummary(
        run_id=run_id,
        status=Status.COMPLETED,
        optimizer=optimizer,
        optimizer_impl=_impl(optimizer, sm3_kernel)
        + ("; word embedding: sparse rows" if experiment == "fastest_exact" else ""),
        batch_size=batch_size,
        seed=seed,
        epochs=epochs,
        epochs_completed=epochs,
        experiment=experiment,
        group=experiment,
        final=FinalScores(
            train_loss=final_loss,
            train_accuracy=values["train_accuracy"],
            dev=dev,
            test=Scores(**scores),
        ),
        best_dev=BestDev(epoch=epochs, dev=dev, test=Scores(**scores)),
        resources=Resources(
            runtime_s=values["runtime_min"] * 60,
            runtime_min=values["runtime_min"],
            cpu_s=values["runtime_min"] * 60 * values["cpu_percent"] / 100 * 2,
            cpu_percent=values["cpu_percent"],
            cpu_percent_peak=values["cpu_percent"] + 10,
            system_cpu_percent_mean=values["cpu_percent"] + 5,
            peak_rss_mb=values["peak_rss_mb"],
            peak_rss_is_process_lifetime=False,
            sampled_rss_peak_mb=values["peak_rss_mb"],
            paused_s=1.0,
            usable_cores=2,
            samples=int(values["runtime_min"] * 120),
            optimizer_state_bytes=int(values["optimizer_state_bytes"]),
            n_parameters=N_PARAMS,
            torch_threads=2,
            data_load_s=1.2,
            featurize_s=0.2,
            examples_per_s=values["examples_per_s"],
            epoch_time_s_mean=values["runtime_min"] * 60 / epochs,
        ),
        data={
            "name": "ud_ewt",
            "train_sentences": 12_544,
            "train_examples": 392_214,
            "skipped_nonprojective": 288,
            "checksums": {"train": "a" * 64, "dev": "b" * 64, "test": "c" * 64},
        },
        provenance={
            "git_commit": "4c9ffa2",
            "git_dirty": False,
            "packages": {"torch": "2.13.0", "numpy": "2.3.0"},
            "python": "3.12.3",
            "cpu_model": "Synthetic CPU @ 2.0GHz",
            "cpu_count": 2,
            "platform": "Linux-x86_64",
            "command": f"python -m sm3repro.train optimizer={optimizer} batch_size={batch_size} seed={seed}",
            "started_at": "2025-01-01T00:00:00+00:00",
            "finished_at": f"2025-01-01T01:{seed:02d}:00+00:00",
        },
    )
    return summary.to_dict(), [row.to_dict() for row in metrics]


def write_run(results_dir: Path, summary: dict, metrics: list[dict]) -> Path:
    run_dir = Path(results_dir) / "runs" / summary["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        f"optimizer:\n  name: {summary['optimizer']}\nbatch_size: {summary['batch_size']}\nseed: {summary['seed']}\n"
    )
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir


def write_results(
    results_dir: Path,
    optimizers: tuple[str, ...] = OPTIMIZERS,
    batches: tuple[int, ...] = (64, 512),
    seeds: tuple[int, ...] = (0, 1, 2),
    epochs: int = 4,
    tweaks: dict[tuple[str, int], dict[str, float]] | None = None,
    noise: dict[str, float] | None = None,
    bad_runs: bool = True,
    experiment: str = "paper",
    sm3_kernel: str | None = "fused-cpp",
) -> Path:
    """Write a grid of completed runs (plus one diverged and one truncated) under results_dir.

    ``tweaks[(opt, bs)]`` overrides seed-mean values (keys of BASE); ``noise`` overrides the
    relative seed spread per quantity (the std over seeds is exactly noise x value). Runs
    get the run ids of ``experiment``'s grid, as its sweep would; SM3's name ``sm3_kernel``.
    """
    spread = {**NOISE, **(noise or {})}
    for opt in optimizers:
        for bs in batches:
            mean = {**BASE[(opt, bs)], **(tweaks or {}).get((opt, bs), {})}
            for seed, off in zip(seeds, _offsets(len(seeds)), strict=True):
                values = {k: v * (1 + off * spread.get(k, DEFAULT_NOISE)) for k, v in mean.items()}
                run = make_run(opt, bs, seed, values, epochs, experiment, sm3_kernel)
                write_run(results_dir, *run)
    if bad_runs:
        diverged, metrics = make_run("adam", 512, 99, BASE[("adam", 512)], epochs)
        diverged.update(
            status=Status.DIVERGED.value,
            reason="loss became NaN at epoch 2",
            run_id="adam-b512-s99-diverged",
        )
        write_run(results_dir, diverged, metrics[:3])
        truncated, metrics = make_run("sgd", 64, 98, BASE[("sgd", 64)], epochs)
        run_dir = write_run(results_dir, {**truncated, "run_id": "sgd-b64-s98-truncated"}, metrics)
        text = (run_dir / "summary.json").read_text()
        (run_dir / "summary.json").write_text(text[: len(text) // 2])  # a crash mid-write
    return Path(results_dir)
