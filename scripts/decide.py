"""Add seeds where the timed arm leaves claims 3 and 4 undecided (``make decide``).

    python scripts/decide.py [--results results] [--dry-run] [KEY=VALUE ...]

Reads the timed arm's records (``experiment=timed``), judges every comparison of claims 3 and 4
in every tier (``sm3repro.report.speed_claims``), and for the comparisons still undecided runs
the next group of ``SEED_GROUP`` seeds of the cells involved (SM3-II and the other optimizer at
that batch size and implementation), one seed block at a time (every run of a seed back to
back), alone on the machine. It looks again after each group, up to ``SEED_CAP`` seeds per
cell; each look decides at its share of alpha (``intervals.spent_alpha``), so adding seeds
cannot inflate the false-positive rate. Resumable: runs are reused by id, so stop it at any
point and run it again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sm3repro.arms.protocols import PROTOCOLS  # noqa: E402
from sm3repro.report import speed_claims  # noqa: E402
from sm3repro.report import time_to_target as ttt  # noqa: E402
from sm3repro.report.intervals import SEED_CAP, SEED_GROUP  # noqa: E402
from sm3repro.report.results import Results  # noqa: E402

# the interleaved arm whose cells this grows (arms/protocols.py)
ARM = next(p for p in PROTOCOLS if p.paired)
PROTOCOL = ARM.speed_label


def timed_runs(results: Path):
    curves = ttt.load_curves(Results(results))
    points = curves.points[curves.points["protocol"] == PROTOCOL]
    if points.empty:
        return None, []
    times = ttt.times_to_target(curves.points, ttt.targets(curves.points))
    runs = speed_claims.run_table(curves, times)
    runs = runs[runs["protocol"] == PROTOCOL]
    return runs, [c for c in speed_claims.comparisons(runs) if c.protocol == PROTOCOL]


def cells_to_grow(runs, found) -> dict[int, set[str]]:
    """batch size -> the variants whose cells an undecided comparison below the cap involves."""
    grow: dict[int, set[str]] = defaultdict(set)
    for c in found:
        if c.part is not None or min(c.ratio.n_a, c.ratio.n_b) >= SEED_CAP:
            continue
        in_protocol = runs[runs["protocol"] == PROTOCOL]
        grow[c.batch_size].add(speed_claims.subject_variant(c.implementation, in_protocol))
        grow[c.batch_size].add(c.other_variant)
    return grow


def sweep(seed: int, batch: int, variants: set[str], overrides: list[str], dry_run: bool) -> None:
    dense = sorted(v for v in variants if not v.endswith(ttt.SPARSE))
    sparse = sorted(v.removesuffix(ttt.SPARSE) for v in variants if v.endswith(ttt.SPARSE))
    for names, extra in ((dense, []), (sparse, ["sparse_rows=true"])):
        if not names:
            continue
        command = [sys.executable, "-m", "sm3repro.train", "-m", f"experiment={ARM.experiment}",
                   f"seed={seed}", f"batch_size={batch}", "optimizer=" + ",".join(names),
                   *extra, *overrides]  # fmt: skip
        print("+", " ".join(command[1:]), flush=True)
        if not dry_run:
            subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--dry-run", action="store_true", help="print the sweeps, run nothing")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    while True:
        runs, found = timed_runs(args.results)
        if runs is None:
            print("no timed-arm records yet: run `python scripts/run_arms.py --stage timed`")
            return 1
        grow = cells_to_grow(runs, found)
        undecided = sum(c.part is None for c in found)
        print(f"{len(found)} comparisons, {undecided} undecided; "
              f"cells to grow: {dict(grow) or 'none'}", flush=True)  # fmt: skip
        if not grow:
            return 0
        first = int(runs["seed"].max()) + 1
        for seed in range(first, first + SEED_GROUP):  # a seed block at a time
            for batch, variants in sorted(grow.items()):
                sweep(seed, batch, variants, args.overrides, args.dry_run)
        if args.dry_run:
            return 0


if __name__ == "__main__":
    sys.exit(main())
