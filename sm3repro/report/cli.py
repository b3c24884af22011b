"""``python -m sm3repro.report --results results [--out results] [--experiment paper]``"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from sm3repro.report.build import build_report
from sm3repro.run.tracking import side_run_tracker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sm3repro.report",
        description="Build REPORT.md, tables and figures from results/runs/.",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(os.environ.get("SM3REPRO_RESULTS", "results")),
        help="folder holding runs/ (default: results)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where REPORT.md, tables/ and figures/ go (default: --results)",
    )
    parser.add_argument(
        "--experiment",
        default=None,
        help="report the runs of this experiment's grid (conf/experiment/<name>.yaml; "
        "default: the only experiment in the records, else 'paper')",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="overrides the sweep was started with besides experiment=<name> "
        "(e.g. data.max_train_sentences=300), so the grid's run ids match its records",
    )
    parser.add_argument(
        "--wandb", action="store_true", help="also log tables and figures via sm3repro.run.tracking"
    )
    args = parser.parse_args(argv)

    if not (args.results / "runs").is_dir():
        sys.exit(
            f"no run records: {args.results / 'runs'} does not exist (train first, or pass --results)"
        )
    tracker = (
        side_run_tracker(
            "report", {"results": str(args.out or args.results), "experiment": args.experiment},
            group=args.experiment or "report",
        )
        if args.wandb
        else None
    )  # fmt: skip
    try:
        report = build_report(
            args.results, args.out, tracker, experiment=args.experiment, overrides=args.overrides
        )
    finally:
        if tracker is not None:
            tracker.finish()
    claims = pd.read_csv(report.parent / "tables" / "claims.csv")
    for num, verdict in claims[["claim", "verdict"]].itertuples(index=False):
        print(f"claim {num}: {verdict}")
    print(f"wrote {report}")
