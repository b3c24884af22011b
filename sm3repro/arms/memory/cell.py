"""One cell of the memory arm, run as its own process: build the parser at one width, train a
fixed number of steps with one optimizer, and write one JSON record.

A fresh process per cell is the point: peak RSS (VmHWM) is a process-lifetime high-water mark,
so each cell's peak is its own, with no heap history of earlier cells. The record is written
atomically and only once every step has run, so a killed cell (out of memory, Ctrl-C) leaves no
record, not a half one.

    python -m sm3repro.arms.memory.cell '<json spec>'

The spec: optimizer, lr, embed_dim, batch_size, steps, threads, device, data (the arm's
feature file), out (the record path) and kind ("grid" or "budget").
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sm3repro.io import atomic_write_json
from sm3repro.optim import SM3, build_optimizer, optimizer_state_bytes
from sm3repro.parser.model import ChenManningParser
from sm3repro.record.provenance import provenance
from sm3repro.run.resources import proc_status_bytes
from sm3repro.study import HIDDEN

# Exit status of a cell that ran out of memory in a way Python could see (an allocator error,
# e.g. under RLIMIT_AS); a cell killed by the kernel's OOM killer dies by SIGKILL instead.
EXIT_OUT_OF_MEMORY = 3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Train ``spec["steps"]`` steps and return the record (not written)."""
    started = time.perf_counter()
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    features, gold, sizes = _load_examples(spec, device)
    model = ChenManningParser(
        sizes["n_words"], sizes["n_tags"], sizes["n_labels"], sizes["n_transitions"],
        embed_dim=spec["embed_dim"], hidden=HIDDEN,
    ).to(device)  # fmt: skip
    optimizer, impl = build_optimizer(
        model.parameters(), {"name": spec["optimizer"], "lr": spec["lr"]}
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s, optimizer_s, losses = _train(model, optimizer, features, gold, spec, device)
    # The first step allocates the optimizer's state and pays one-off costs: time the rest.
    timed = slice(1, None) if spec["steps"] > 1 else slice(None)
    return {
        "status": "completed", "kind": spec["kind"], "spec": spec,
        "optimizer": spec["optimizer"], "optimizer_impl": impl, "embed_dim": spec["embed_dim"],
        "hidden": list(HIDDEN), "batch_size": spec["batch_size"], "steps": spec["steps"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameter_shapes": [list(p.shape) for p in model.parameters()],
        "state_bytes": optimizer_state_bytes(optimizer),
        "scratch_bytes": 0 if isinstance(optimizer, SM3) else None,  # SM3 keeps none past a step
        **_memory_fields(device),
        "step_s": step_s, "optimizer_step_s": optimizer_s,
        "step_s_median": statistics.median(step_s[timed]),
        "optimizer_step_s_median": statistics.median(optimizer_s[timed]),
        "losses": losses, "wall_s": time.perf_counter() - started,
        "device": str(device), "threads": spec["threads"],
        # Spinning OpenMP workers wreck step times on a shared machine; say which was used.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "pid": os.getpid(), "data": sizes,
        "provenance": {
            **provenance(), "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }  # fmt: skip


def _load_examples(
    spec: dict[str, Any], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """The arm's feature file: features, gold transitions and the vocabulary sizes."""
    with np.load(spec["data"]) as data:
        features = torch.from_numpy(data["features"].astype(np.int64)).to(device)
        gold = torch.from_numpy(data["gold"].astype(np.int64)).to(device)
        sizes = {k: int(data[k]) for k in ("n_words", "n_tags", "n_labels", "n_transitions")}
    needed = spec["batch_size"] * spec["steps"]
    if len(gold) < needed:
        raise ValueError(f"the arm's data has {len(gold)} examples, {needed} needed")
    return features, gold, sizes


def _train(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, features: torch.Tensor,
    gold: torch.Tensor, spec: dict[str, Any], device: torch.device,
) -> tuple[list[float], list[float], list[float]]:  # fmt: skip
    """Step times, optimizer-step times and losses of ``spec["steps"]`` training steps."""
    batch = spec["batch_size"]
    step_s, optimizer_s, losses = [], [], []
    for b in range(spec["steps"]):
        x, y = features[b * batch : (b + 1) * batch], gold[b * batch : (b + 1) * batch]
        _sync(device)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        _sync(device)
        t1 = time.perf_counter()
        optimizer.step()
        _sync(device)
        t2 = time.perf_counter()
        step_s.append(t2 - t0)
        optimizer_s.append(t2 - t1)
        losses.append(loss.item())
    return step_s, optimizer_s, losses


def _memory_fields(device: torch.device) -> dict[str, int | None]:
    return {
        "peak_rss_bytes": proc_status_bytes("VmHWM"),
        "peak_virtual_bytes": proc_status_bytes("VmPeak"),
        "data_segment_bytes": proc_status_bytes("VmData"),
        # At the end: resident anonymous memory vs file pages (shared libraries), which a
        # memory cgroup charges only to the group that first read them.
        "rss_anon_bytes": proc_status_bytes("RssAnon"),
        "rss_file_bytes": proc_status_bytes("RssFile"),
        "cuda_max_memory_allocated": (
            torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        ),
    }


def _is_allocation_failure(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError)
        and any(s in str(error) for s in ("can't allocate memory", "out of memory"))
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sm3repro.arms.memory.cell '<json spec>'", file=sys.stderr)
        return 2
    spec = json.loads(args[0])
    try:
        record = run_cell(spec)
    except Exception as error:
        if _is_allocation_failure(error):
            first = str(error).strip().splitlines()[0] if str(error).strip() else "MemoryError"
            print(f"out of memory: {first}", file=sys.stderr)
            return EXIT_OUT_OF_MEMORY
        raise
    Path(spec["out"]).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(spec["out"], record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
