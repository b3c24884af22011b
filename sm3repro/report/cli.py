"""``python -m sm3repro.report --results results [--out results] [--experiment paper]``"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sm3repro.report.build import build_report
from sm3repro.run.grid import config_dir


def _make_tracker(out_dir: Path, experiment: str | None) -> Any:
    """A W&B run of job type "report" (imported lazily: W&B is slow to import)."""
    from omegaconf import OmegaConf

    from sm3repro.run.tracking import make_tracker

    logger_cfg = OmegaConf.load(config_dir() / "logger" / "wandb.yaml")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return make_tracker(
        logger_cfg, run_name=f"report-{stamp}", run_id=f"report-{stamp}", config={"results": str(out_dir), "experiment": experiment},
        group=experiment or "report", tags=["report"], directory=str(logger_cfg.get("dir", ".")),
        job_type="report",
    )  # fmt: skip


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
    tracker = _make_tracker(args.out or args.results, args.experiment) if args.wandb else None
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
