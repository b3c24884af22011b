"""``python -m sm3repro.arms.lr_selection [--results results] [--write-tuned [PATH]] [KEY=VALUE]``:
each cell's choice, the commands that run what is missing, and optionally the tuned-lr config."""

from __future__ import annotations

import argparse
from pathlib import Path

from sm3repro.arms.lr_selection.records import choices_from_records
from sm3repro.arms.lr_selection.rule import as_frame, rerun_command, still_to_run
from sm3repro.arms.lr_selection.tuned_config import TUNED_PATH, write_tuned
from sm3repro.record.reader import read_records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sm3repro.arms.lr_selection",
        description="Choose each (optimizer, batch) cell's lr from the lr_grid records on dev.",
    )
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument(
        "--write-tuned",
        nargs="?",
        const=TUNED_PATH,
        type=Path,
        default=None,
        metavar="PATH",
        help=f"write the tuned-lr experiment config (default {TUNED_PATH})",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides the lr_grid sweep ran with"
    )
    args = parser.parse_args(argv)

    choices, scores, cells = choices_from_records(read_records(args.results), args.overrides)
    table = as_frame(choices)
    print(table.to_string(index=False) if len(table) else "no finished lr_grid records")
    todo = still_to_run(choices, cells)
    print(f"\n{len(cells) - len(todo)} of {len(cells)} cells settled.")
    if todo:
        print("Still to run (missing grid points and extensions):")
        for (optimizer, batch), lrs in todo:
            print("  " + rerun_command(optimizer, batch, lrs, args.overrides))
    if args.write_tuned is not None:
        write_tuned(args.write_tuned, choices, scores, str(args.results))
        print(f"wrote {args.write_tuned}")
