"""The search behind ``experiment=best_parser``: variants of it, scored on EWT dev.

    python scripts/tune_parser.py --workers 6 --device cuda --out results/tuning/search.jsonl
    python scripts/tune_parser.py --summarize results/tuning/search.jsonl

Each variant is ``experiment=best_parser`` plus a few overrides, trained with ``logger=none``
and no checkpoints; ``--workers`` processes take every ``workers``-th variant (2 torch threads
each). One JSON line per finished run goes to ``--out`` as it ends, so a stopped search keeps
what it has, and ``--budget`` stops starting new runs after that many seconds. Choose on dev
(``--summarize`` ranks variants by mean dev LAS over seeds); test is shown, not chosen on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Stage 1: the factors that mattered, crossed; stage 2: one change each to stage 1's best.
STAGE_1 = [
    [f"epochs={e}", f"lr_schedule={s}", f"ema_decay={a}", f"data.pos_column={p}"]
    for e in (8, 12)
    for s in ("constant", "linear")
    for a in ("null", "0.999")
    for p in ("both", "all")
]
STAGE_2_BASE = ["epochs=12", "lr_schedule=linear", "ema_decay=0.999", "data.pos_column=all"]
STAGE_2 = [
    STAGE_2_BASE + [change]
    for change in (
        "model.embed_dim=100", "model.dropout=0.3", "model.activation=cube", "optimizer.lr=0.002",
        "batch_size=128", "model.word_dropout=0.1", "epochs=20", "model.hidden=[1024,1024]",
        "model.dropout=0.6",
    )
]  # fmt: skip
SEEDS = (0, 1)


def variants() -> list[list[str]]:
    """Every run of the search, in the order they are started."""
    return [v + [f"seed={seed}"] for v in STAGE_1 + STAGE_2 for seed in SEEDS]


def _row(overrides: list[str], summary: dict, wall_s: float) -> dict:
    best, final = summary.get("best_dev") or {}, summary.get("final") or {}
    pick = lambda part, split, key: (part.get(split) or {}).get(key)  # noqa: E731
    return {
        "overrides": overrides,
        "status": summary["status"],
        "best_epoch": best.get("epoch"),
        "dev_las": pick(best, "dev", "las_micro"),
        "dev_uas": pick(best, "dev", "uas_micro"),
        "test_las": pick(best, "test", "las_micro"),
        "test_uas": pick(best, "test", "uas_micro"),
        "final_test_las": pick(final, "test", "las_micro"),
        "final_test_uas": pick(final, "test", "uas_micro"),
        "epoch_time_s": summary.get("resources", {}).get("epoch_time_s_mean"),
        "wall_s": round(wall_s, 1),
    }


def _worker(index: int, args: argparse.Namespace, scratch: str) -> None:
    from hydra import compose, initialize_config_dir

    from sm3repro.paths import config_dir
    from sm3repro.train import run

    start = time.time()
    common = ["experiment=best_parser", "logger=none", "checkpoint=false", f"device={args.device}",
              f"results_dir={scratch}/runs{index}", f"cache_dir={scratch}/cache"]  # fmt: skip
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for k, overrides in enumerate(variants()):
            if k % args.workers != index or time.time() - start > args.budget:
                continue
            t0 = time.time()
            try:
                row = _row(overrides, run(compose("config", overrides=common + overrides)),
                           time.time() - t0)  # fmt: skip
            except Exception as err:  # one failed variant must not stop the search
                row = {"overrides": overrides, "status": "failed", "error": repr(err)[:500]}
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


def summarize(path: Path) -> None:
    """Variants ranked by mean best-dev LAS over seeds, with test beside it."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("status") == "completed":
            key = " ".join(o for o in row["overrides"] if not o.startswith("seed="))
            groups[key].append(row)
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    ranked = sorted(groups.items(), key=lambda kv: -mean(kv[1], "dev_las"))
    print(f"{'dev LAS':>8} {'dev UAS':>8} {'test LAS':>9} {'test UAS':>9}  n  variant")
    for key, rows in ranked:
        print(f"{mean(rows, 'dev_las'):8.4f} {mean(rows, 'dev_uas'):8.4f} "
              f"{mean(rows, 'test_las'):9.4f} {mean(rows, 'test_uas'):9.4f} {len(rows):2d}  {key}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--budget", type=float, default=float("inf"), help="seconds")
    parser.add_argument("--out", type=Path, default=Path("results/tuning/search.jsonl"))
    parser.add_argument("--summarize", type=Path, help="rank the runs in this file and exit")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sm3repro-tune-") as scratch:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(i, args, scratch)) for i in range(args.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    summarize(args.out)


if __name__ == "__main__":
    main()
