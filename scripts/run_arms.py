"""Run the claims arms end to end, resumably: lr selection, then every protocol arm of
``sm3repro.arms.protocols`` (tuned lr, no dropout, timed), then the report.

    python scripts/run_arms.py                    # everything still missing, then the report
    python scripts/run_arms.py --stage selection  # only the lr grid and its extensions
    python scripts/run_arms.py --stage timed --seeds 0  # one seed block of the timed arm

Each stage is a Hydra sweep of `sm3repro.run.train`, so finished runs are skipped and an interrupted
one resumes from its checkpoint: stop this at any point and run it again. Selection runs only
need dev scores and take `--selection-threads` torch threads (1 lets other work go on beside
them; the report leaves runs on fewer threads than cores out of timing verdicts). The timed arms
run at the config's `torch_threads` and want the machine alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sm3repro.arms.lr_selection.records import choices_from_records  # noqa: E402
from sm3repro.arms.lr_selection.rule import still_to_run, sweep_overrides  # noqa: E402
from sm3repro.arms.lr_selection.tuned_config import configured_path, write_tuned  # noqa: E402
from sm3repro.arms.protocols import STUDY, Protocol, arms  # noqa: E402
from sm3repro.optim.catalog import sparse_rows_grid  # noqa: E402
from sm3repro.record.reader import read_records  # noqa: E402

# the lr selection, then every protocol arm in its entry's order, then the report
STAGES = ("selection", *(arm.experiment for arm in arms()), "report")


def _sweep(overrides: list[str]) -> None:
    command = [sys.executable, "-m", "sm3repro.train", "-m", *overrides]
    print("+", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def select(results: Path, threads: int, overrides: list[str]) -> bool:
    """Run the lr grid and its extensions until every cell is settled; True when settled."""
    _sweep(["experiment=lr_grid", f"torch_threads={threads}", *overrides])
    while True:
        choices, scores, cells = choices_from_records(read_records(results), overrides)
        todo = still_to_run(choices, cells)
        if not todo:
            break
        for (optimizer, batch), lrs in todo:
            _sweep([*sweep_overrides(optimizer, batch, lrs), f"torch_threads={threads}",
                    *overrides])  # fmt: skip
    tuned = configured_path()
    write_tuned(tuned, choices, scores, str(results))
    print(f"every cell settled; wrote {tuned}", flush=True)
    return True


def seed_blocks(arm: Protocol, seeds: list[int], overrides: list[str]) -> None:
    """An interleaved arm block by block: every optimizer of a seed, dense then with exact
    sparse rows, back to back (e.g. conf/experiment/timed.yaml)."""
    for seed in seeds:
        _sweep([f"experiment={arm.experiment}", f"seed={seed}", *overrides])
        _sweep([
            f"experiment={arm.experiment}", f"seed={seed}", "sparse_rows=true",
            "optimizer=" + ",".join(sparse_rows_grid()), *overrides,
        ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=(*STAGES, "all"), default="all")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--selection-threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="the seed blocks of an interleaved arm (timed)")  # fmt: skip
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    stages = STAGES if args.stage == "all" else (args.stage,)
    if "selection" in stages:
        select(args.results, args.selection_threads, args.overrides)
    for arm in arms():
        if arm.experiment not in stages:
            continue
        if arm.arm_run == "seed blocks":
            seed_blocks(arm, args.seeds, args.overrides)
        else:
            _sweep([f"experiment={arm.experiment}", *args.overrides])
    if "report" in stages:
        command = [sys.executable, "-m", "sm3repro.report", "--results", str(args.results),
                   "--experiment", STUDY.experiment]  # fmt: skip
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
