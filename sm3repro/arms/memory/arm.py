"""The memory arm: optimizer memory and step time as the parser is widened, and the largest
model each optimizer trains under a hard memory budget.

    python -m sm3repro.arms.memory                 # both parts, into results/memory/ (resumable)
    python -m sm3repro.arms.memory --part grid     # sizes x optimizers x batch sizes only

Every measurement is a fresh process (:mod:`sm3repro.arms.memory.cell`) writing one JSON record; a
record that exists and matches its spec is not run again, so an interrupted arm resumes.
A plain argparse CLI rather than a Hydra config: the arm is a fixed grid over a process
boundary, with no per-run config tree for Hydra to compose, and its records are not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sm3repro import study
from sm3repro.arms.memory.cell import EXIT_OUT_OF_MEMORY
from sm3repro.arms.memory.family import BUDGET_EMBED_DIMS, GRID_EMBED_DIMS
from sm3repro.arms.memory.limit import GIB, LimitUnavailable, join_preexec, memory_cgroup
from sm3repro.io import atomic_write_json
from sm3repro.optim.catalog import names
from sm3repro.paths import PACKAGE_DIR, config_dir, ewt_data_dir
from sm3repro.record.provenance import provenance

MIB = 1024**2
IMPORT_ROOT = PACKAGE_DIR.parent  # the folder the sm3repro package is imported from
# The spec keys that decide a cell's result; a record with other values is redone.
IDENTITY = ("optimizer", "lr", "embed_dim", "batch_size", "steps", "device", "limit_bytes")


@dataclass
class ArmConfig:
    results_dir: Path = Path("results/memory")
    optimizers: Sequence[str] = field(default_factory=names)  # every optimizer in the catalog
    lr: float = study.LR  # the study's, for every optimizer
    embed_dims: Sequence[int] = GRID_EMBED_DIMS
    batch_sizes: Sequence[int] = study.BATCH_SIZES
    # Step 1 allocates the state and warms up; steps 2-4 are timed (median). Few steps: the
    # arm measures memory, and a 200M-parameter batch-512 step takes seconds on 2 cores.
    steps: int = 4
    budgets_gib: Sequence[float] = (1, 2, 4)
    budget_embed_dims: Sequence[int] = BUDGET_EMBED_DIMS
    budget_batch_size: int = 64
    budget_steps: int = 3  # the state exists after step 1; steps 2-3 run with it in place
    threads: int = 2
    device: str = "cpu"
    data_dir: Path = field(default_factory=ewt_data_dir)  # as sm3repro-train finds it
    cache_dir: Path = Path(os.environ.get("SM3REPRO_CACHE", "cache"))
    max_train_sentences: int | None = None  # a cut for tests; the arm samples all of train


def known_optimizers(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``names`` into those the optimizer registry builds and those it does not know."""
    from sm3repro.optim import OPTIMIZERS

    return [n for n in names if n in OPTIMIZERS], [n for n in names if n not in OPTIMIZERS]


# -- data --------------------------------------------------------------------------------
def prepare_data(cfg: ArmConfig, n_examples: int) -> Path:
    """A fixed random sample of EWT's featurized training configurations, with the vocabulary
    sizes, in one small file every cell loads (reading and featurizing the treebank in each
    cell would cost seconds and its memory would blur the cell's)."""
    from omegaconf import OmegaConf

    from sm3repro.parser.dataset import load_data

    data_cfg = OmegaConf.load(config_dir() / "data" / "ud_ewt.yaml")
    data_cfg.dir = str(Path(cfg.data_dir).resolve())
    data_cfg.max_train_sentences = cfg.max_train_sentences
    data = load_data(data_cfg, cfg.cache_dir)
    sha = data.stats["checksums"]["train"]
    cut = f"-s{cfg.max_train_sentences}" if cfg.max_train_sentences else ""
    path = Path(cfg.cache_dir) / f"memory-arm-{sha[:12]}{cut}-{n_examples}.npz"
    if path.exists():
        return path
    if len(data.gold) < n_examples:
        raise ValueError(f"EWT train has {len(data.gold)} configurations, {n_examples} needed")
    order = np.random.default_rng(0).permutation(len(data.gold))[:n_examples]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    vocab = data.vocab
    np.savez(
        tmp, features=data.features[order], gold=data.gold[order],
        n_words=len(vocab.words), n_tags=len(vocab.tags), n_labels=len(vocab.labels),
        n_transitions=vocab.n_transitions,
    )  # fmt: skip
    os.replace(tmp, path)
    return path


# -- running cells -----------------------------------------------------------------------
def cell_name(optimizer: str, embed_dim: int, batch_size: int) -> str:
    return f"{optimizer}-e{embed_dim}-b{batch_size}"


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_done(path: Path, spec: dict[str, Any]) -> bool:
    """A finished record of this very spec exists (completed, or out of memory under a limit)."""
    record = read_record(path)
    if record is None or record.get("status") not in ("completed", "out_of_memory"):
        return False
    return all(record.get("spec", {}).get(k) == spec.get(k) for k in IDENTITY)


def _cell_command(spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "sm3repro.arms.memory.cell", json.dumps(spec)]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The cell imports this same package (a checkout or a wheel), wherever the arm was started.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(IMPORT_ROOT), env.get("PYTHONPATH")]))
    return env


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_unlimited(spec: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """Run one cell with no memory limit: (its record, "") or (None, why it failed)."""
    proc = subprocess.run(_cell_command(spec), capture_output=True, text=True, env=_child_env())
    if proc.returncode == 0:
        return read_record(Path(spec["out"])), ""
    return None, f"exit {proc.returncode}: {_last_line(proc.stderr)}"


def run_limited(spec: dict[str, Any], limit_bytes: int) -> dict[str, Any]:
    """Run one cell inside a memory cgroup of ``limit_bytes``. Returns its record; a run the
    limit stopped gets an ``out_of_memory`` record with a one-line ``message``, written here,
    never by the child. Raises RuntimeError for any other failure."""
    spec = {**spec, "limit_bytes": limit_bytes}
    Path(spec["out"]).parent.mkdir(parents=True, exist_ok=True)
    label = (
        f"{spec['optimizer']} e{spec['embed_dim']} ({spec['parameters'] / 1e6:.1f}M params) "
        f"b{spec['batch_size']}"
    )
    with memory_cgroup(limit_bytes, "sm3repro-memory") as group:
        proc = subprocess.run(
            _cell_command(spec), capture_output=True, text=True, env=_child_env(),
            preexec_fn=join_preexec(group),
        )  # fmt: skip
        oom_kills, cgroup_peak = group.oom_kills(), group.peak_bytes()
    limit = (
        f"{limit_bytes / GIB:g} GiB"
        if limit_bytes % (GIB // 4) == 0
        else f"{limit_bytes / MIB:g} MiB"
    )
    if proc.returncode == 0:
        record = read_record(Path(spec["out"]))
        if record is None:
            raise RuntimeError(f"{label}: exited 0 without a record")
        record.update(limit_bytes=limit_bytes, cgroup_peak_bytes=cgroup_peak)
        atomic_write_json(spec["out"], record)
        return record
    if oom_kills or proc.returncode in (-9, EXIT_OUT_OF_MEMORY):
        how = (
            "killed by the kernel's OOM killer"
            if oom_kills
            else _last_line(proc.stderr) or f"exit {proc.returncode}"
        )
        message = f"{label}: exceeds the {limit} memory limit ({how})"
        record = {
            "status": "out_of_memory",
            "kind": spec["kind"],
            "spec": spec,
            "optimizer": spec["optimizer"],
            "embed_dim": spec["embed_dim"],
            "batch_size": spec["batch_size"],
            "parameters": spec["parameters"],
            "limit_bytes": limit_bytes,
            "cgroup_peak_bytes": cgroup_peak,
            "oom_kills": oom_kills,
            "message": message,
            "provenance": provenance(),
        }
        atomic_write_json(spec["out"], record)
        return record
    raise RuntimeError(f"{label}: failed (exit {proc.returncode}): {_last_line(proc.stderr)}")


def _base_spec(cfg: ArmConfig, data: Path, kind: str) -> dict[str, Any]:
    return {"kind": kind, "lr": cfg.lr, "threads": cfg.threads, "device": cfg.device,
            "data": str(data.resolve())}  # fmt: skip


def _parameters(embed_dim: int, data: Path) -> int:
    from sm3repro.arms.memory.family import n_parameters, parameter_shapes

    with np.load(data) as d:
        sizes = [int(d[k]) for k in ("n_words", "n_tags", "n_labels", "n_transitions")]
    return n_parameters(parameter_shapes(embed_dim, *sizes))


# -- the two parts -------------------------------------------------------------------------
def run_grid(cfg: ArmConfig, data: Path, optimizers: Sequence[str]) -> int:
    """Every size x batch x optimizer (SGD first: the baseline). Returns the failures."""
    out_dir = Path(cfg.results_dir) / "grid"
    cells = [(e, b, o) for e in cfg.embed_dims for b in cfg.batch_sizes for o in optimizers]
    failures = 0
    for i, (embed_dim, batch, opt) in enumerate(cells, start=1):
        out = out_dir / f"{cell_name(opt, embed_dim, batch)}.json"
        spec = {**_base_spec(cfg, data, "grid"), "optimizer": opt, "embed_dim": embed_dim,
                "batch_size": batch, "steps": cfg.steps, "out": str(out)}  # fmt: skip
        head = f"grid {i}/{len(cells)} {out.stem}"
        if is_done(out, spec):
            print(f"{head}: done before", flush=True)
            continue
        record, why = run_unlimited(spec)
        if record is None:
            failures += 1
            print(f"{head}: FAILED ({why})", flush=True)
            continue
        print(
            f"{head}: {record['parameters'] / 1e6:.1f}M params, state "
            f"{record['state_bytes'] / MIB:.1f} MiB, peak RSS {record['peak_rss_bytes'] / MIB:.0f} "
            f"MiB, step {record['step_s_median'] * 1e3:.1f} ms "
            f"(optimizer {record['optimizer_step_s_median'] * 1e3:.1f} ms)",
            flush=True,
        )
    return failures


def _predicted_rung(cfg: ArmConfig, opt: str, limit_bytes: int, data: Path) -> int:
    """Where to start the search: the largest rung whose peak RSS, extrapolated linearly in
    parameters from the grid's records at this batch size, fits the limit (a guess to save
    runs; every answer is then measured)."""
    points = []
    for path in sorted(
        (Path(cfg.results_dir) / "grid").glob(f"{opt}-e*-b{cfg.budget_batch_size}.json")
    ):
        record = read_record(path)
        if record and record.get("status") == "completed" and record.get("steps", 0) > 1:
            points.append((record["parameters"], record["peak_rss_bytes"]))
    if len(points) >= 2 and max(p for p, _ in points) >= 50e6:  # small sizes: RSS noise rules
        x, y = np.array(points, dtype=float).T
        slope, intercept = np.polyfit(x, y, 1)
    else:  # no grid yet: weights and gradients (8 B/param), the state in theory, ~450 MiB base
        from sm3repro.arms.memory.family import parameter_shapes, theory_state_bytes

        with np.load(data) as d:
            sizes = [int(d[k]) for k in ("n_words", "n_tags", "n_labels", "n_transitions")]
        e = cfg.budget_embed_dims[-1]
        theory = theory_state_bytes(opt, parameter_shapes(e, *sizes)) or 0
        slope, intercept = 8 + theory / _parameters(e, data), 450 * MIB
    fits = [i for i, e in enumerate(cfg.budget_embed_dims)
            if intercept + slope * _parameters(e, data) <= limit_bytes]  # fmt: skip
    return max(fits) if fits else 0


def run_budgets(cfg: ArmConfig, data: Path, optimizers: Sequence[str]) -> int:
    """For each budget and optimizer, walk the ladder to the largest rung that completes under
    the limit with the next rung failing. Returns the searches that could not finish."""
    out_dir = Path(cfg.results_dir) / "budget"
    ladder = list(cfg.budget_embed_dims)
    failures = 0
    for budget in cfg.budgets_gib:
        limit = int(budget * GIB)
        for opt in optimizers:

            def probe(i: int, opt: str = opt, budget: float = budget, limit: int = limit) -> bool:
                embed_dim = ladder[i]
                out = out_dir / f"{opt}-{budget:g}gib-e{embed_dim}.json"
                spec = {**_base_spec(cfg, data, "budget"), "optimizer": opt,
                        "embed_dim": embed_dim, "batch_size": cfg.budget_batch_size,
                        "steps": cfg.budget_steps, "out": str(out),
                        "parameters": _parameters(embed_dim, data)}  # fmt: skip
                if is_done(out, {**spec, "limit_bytes": limit}):
                    record = read_record(out)
                else:
                    record = run_limited(spec, limit)
                ok = record["status"] == "completed"
                what = "completes" if ok else record["message"]
                print(f"budget {budget:g} GiB {opt} e{embed_dim}: {what}", flush=True)
                return ok

            try:
                i = _predicted_rung(cfg, opt, limit, data)
                if probe(i):
                    while i + 1 < len(ladder) and probe(i + 1):
                        i += 1
                else:
                    while i > 0 and not probe(i - 1):
                        i -= 1
            except RuntimeError as error:
                failures += 1
                print(f"budget {budget:g} GiB {opt}: search stopped: {error}", flush=True)
    return failures


def run_arm(cfg: ArmConfig, part: str = "all") -> int:
    """Run the arm; returns the number of failures (0 when every cell and search finished)."""
    optimizers, unknown = known_optimizers(cfg.optimizers)
    for name in unknown:
        print(f"skipping {name}: not in the optimizer registry (sm3repro.optim)", flush=True)
    started = time.perf_counter()
    n_examples = max(max(cfg.batch_sizes) * cfg.steps, cfg.budget_batch_size * cfg.budget_steps)
    data = prepare_data(cfg, n_examples)
    failures = 0
    if part in ("all", "grid"):
        failures += run_grid(cfg, data, optimizers)
    if part in ("all", "budget"):
        try:
            failures += run_budgets(cfg, data, optimizers)
        except LimitUnavailable as error:
            print(f"budget search not run: {error}", flush=True)
            failures += 1
    print(f"memory arm: {failures} failures, {time.perf_counter() - started:.0f} s", flush=True)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    d = ArmConfig()
    p = argparse.ArgumentParser(
        prog="python -m sm3repro.arms.memory", description=__doc__.split("\n")[0]
    )
    p.add_argument("--part", choices=("all", "grid", "budget"), default="all")
    p.add_argument("--results", type=Path, default=d.results_dir)
    p.add_argument("--optimizers", nargs="+", default=list(d.optimizers))
    p.add_argument("--embed-dims", nargs="+", type=int, default=list(d.embed_dims))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=list(d.batch_sizes))
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--budgets", nargs="+", type=float, default=list(d.budgets_gib), help="GiB")
    p.add_argument("--budget-embed-dims", nargs="+", type=int, default=list(d.budget_embed_dims))
    p.add_argument("--budget-steps", type=int, default=d.budget_steps)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--device", default=d.device)
    p.add_argument("--data-dir", type=Path, default=d.data_dir)
    p.add_argument("--cache-dir", type=Path, default=d.cache_dir)
    p.add_argument(
        "--wandb", action="store_true", help="log the records as a W&B run of job type 'memory'"
    )
    a = p.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: the running cell is stopped and its cgroup removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    cfg = ArmConfig(
        results_dir=a.results, optimizers=a.optimizers, embed_dims=a.embed_dims,
        batch_sizes=a.batch_sizes, steps=a.steps, budgets_gib=a.budgets,
        budget_embed_dims=a.budget_embed_dims, budget_steps=a.budget_steps, threads=a.threads,
        device=a.device, data_dir=a.data_dir, cache_dir=a.cache_dir,
    )  # fmt: skip
    failed = run_arm(cfg, a.part)
    if a.wandb:
        log_to_wandb(a.results)
    return 1 if failed else 0


def log_to_wandb(results_dir: Path) -> None:
    """The arm's records as one W&B run (job type ``memory``): its grid as a table and every
    record file as an artifact. Offline unless WANDB_MODE=online, like the training runs."""
    from sm3repro.arms.memory.verdicts import load_grid
    from sm3repro.run.tracking import side_run_tracker

    memory_dir = Path(results_dir)
    records = sorted(memory_dir.glob("*/*.json"))
    tracker = side_run_tracker("memory", {"results": str(memory_dir)}, group="memory")
    stamp = tracker.run.name.removeprefix("memory-") if tracker.enabled else "offline"
    with tracker:
        grid = load_grid(memory_dir)
        if not grid.empty:
            tracker.log_table("memory_grid", grid.drop(columns=["spec"], errors="ignore"))
        tracker.log_summary({"records": len(records), "grid_cells": len(grid)})
        tracker.log_files(f"memory-records-{stamp}", "memory-records", records)
