"""The hyperparameter search's records as ranked tables.

    python -m sm3repro.report.tuning                      # the Optuna study (hparams_search)
    python -m sm3repro.report.tuning --legacy results/tuning/search.jsonl

The Optuna view reads the study that `hparams_search=best_parser` stores in SQLite: one row per
trial, best first, with the value it was chosen on and the sampled parameters. The legacy view
ranks the committed 34-run search (one JSON line per run, two seeds per variant) by mean dev
LAS over seeds, with test shown beside it, not chosen on.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import pandas as pd

DEFAULT_STORAGE = "sqlite:///results/tuning/best_parser.db"
DEFAULT_STUDY = "best_parser"


def study_trials(storage: str = DEFAULT_STORAGE, study_name: str = DEFAULT_STUDY) -> pd.DataFrame:
    """Every trial of the stored study, best value first (failed and running trials last)."""
    with warnings.catch_warnings():
        # optuna 2.10 uses SQLAlchemy 1.4 APIs that 2.0 removed (hence the sqlalchemy<2 pin);
        # SQLAlchemy warns about them on import.
        warnings.filterwarnings("ignore", message="Deprecated API features detected")
        import optuna  # imported here: it is slow to import and only this view needs it

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params"))
    trials = trials.rename(columns=lambda c: c.removeprefix("params_"))
    trials["duration"] = trials["duration"].dt.total_seconds().round(1)
    trials = trials.rename(columns={"duration": "duration_s"})
    ascending = study.direction == optuna.study.StudyDirection.MINIMIZE
    return trials.sort_values("value", ascending=ascending, na_position="last", kind="stable")


def legacy_search(path: str | Path) -> pd.DataFrame:
    """The committed search.jsonl ranked by mean best-dev LAS over seeds (completed runs)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    runs = pd.DataFrame([r for r in rows if r.get("status") == "completed"])
    runs["variant"] = runs["overrides"].map(
        lambda overrides: " ".join(o for o in overrides if not o.startswith("seed="))
    )
    scores = ["dev_las", "dev_uas", "test_las", "test_uas"]
    ranked = runs.groupby("variant", sort=False)[scores].mean()
    ranked["n"] = runs.groupby("variant", sort=False).size()
    return ranked.sort_values("dev_las", ascending=False, kind="stable").reset_index()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL")
    parser.add_argument("--study", default=DEFAULT_STUDY, help="Optuna study name")
    parser.add_argument("--legacy", type=Path, help="rank this search.jsonl instead")
    args = parser.parse_args(argv)
    if args.legacy:
        table = legacy_search(args.legacy)
    else:
        table = study_trials(args.storage, args.study)
    print(table.to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
