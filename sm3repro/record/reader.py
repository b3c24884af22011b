"""Run records read back: every folder under ``<results>/runs`` as one :class:`Record`, by one
status rule.

A record is *unreadable* when its ``summary.json`` is missing, is not a JSON object, names no
optimizer or batch size, or does not fit the schema (``RunSummary.from_dict``); otherwise its
status is the one the run wrote (running, completed or diverged), and it is *finished* when
that status is completed or diverged. The report, the lr selection and the scripts that grow
the arms all read records through here, so a record counts the same everywhere.

Fields a record is allowed to lack are filled before the schema reads it: the run id (the
folder's name), the experiment label (its group, else ``default``), and the free-form ``data``
and ``provenance`` sections. ``metrics.jsonl`` is read on demand (:func:`read_metrics`),
without the step rows nothing here reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sm3repro.record.schema import FINISHED, MetricsRow, RunSummary, Status, metrics_row

UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Record:
    """One run folder: its typed summary (None when unreadable) and its status."""

    run_id: str  # the folder's name: the run id of the config that made it
    path: Path
    status: str  # a Status value, or UNREADABLE
    summary: RunSummary | None
    reason: str = ""  # why it is unreadable, or the reason a diverged run recorded

    @property
    def completed(self) -> bool:
        return self.status == Status.COMPLETED

    @property
    def finished(self) -> bool:
        """Never trained again: completed or diverged."""
        return self.status in FINISHED

    @property
    def label(self) -> str:
        """The run id its summary names (the folder's name when unreadable)."""
        return self.summary.run_id if self.summary is not None else self.run_id


def _filled(data: dict[str, Any], folder: str) -> dict[str, Any]:
    """``data`` with the fields a record may lack filled in (see the module doc)."""
    experiment = data.get("experiment") or data.get("group") or "default"
    return {
        **data,
        "run_id": data.get("run_id") or folder,
        "experiment": experiment,
        "group": data.get("group") or experiment,
        "data": data["data"] if isinstance(data.get("data"), dict) else {},
        "provenance": data["provenance"] if isinstance(data.get("provenance"), dict) else {},
        "optimizer_impl": data.get("optimizer_impl") or "",
    }


def read_record(run_dir: str | Path) -> Record:
    """The record in ``run_dir``; never raises on a damaged one (it is UNREADABLE, with why)."""
    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / "summary.json").read_text())
        if not isinstance(data, dict):
            raise ValueError("summary.json is not a JSON object")
    except (OSError, ValueError) as err:  # missing, truncated or not JSON
        return Record(run_dir.name, run_dir, UNREADABLE, None, f"summary.json: {err}")
    if not data.get("optimizer") or data.get("batch_size") is None:
        return Record(run_dir.name, run_dir, UNREADABLE, None, "no optimizer/batch_size")
    try:
        summary = RunSummary.from_dict(_filled(data, run_dir.name))
    except (TypeError, ValueError, AttributeError) as err:  # fields outside the schema
        return Record(run_dir.name, run_dir, UNREADABLE, None, f"summary.json: {err}")
    return Record(run_dir.name, run_dir, str(summary.status), summary, summary.reason or "")


def read_records(results_dir: str | Path) -> dict[str, Record]:
    """Every run folder under ``results_dir/runs``, by folder name, in name order."""
    folders = sorted(p for p in (Path(results_dir) / "runs").glob("*") if p.is_dir())
    return {folder.name: read_record(folder) for folder in folders}


def finished_count(records: Mapping[str, Record], run_ids: Iterable[str]) -> int:
    """How many of ``run_ids`` have a finished record."""
    return sum(run_id in records and records[run_id].finished for run_id in run_ids)


def read_metrics(run_dir: str | Path) -> list[MetricsRow]:
    """The typed rows of ``metrics.jsonl`` other than step rows, in file order.

    Raises OSError, ValueError or TypeError for a file that cannot be read whole (a torn last
    line, a row outside the schema): a caller decides what a run without curves means.
    """
    rows = []
    with (Path(run_dir) / "metrics.jsonl").open() as fh:
        for line in fh:
            if not line.strip():
                continue
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("a metrics row is not a JSON object")
            if data.get("kind", "step") != "step":
                rows.append(metrics_row(data))
    return rows
