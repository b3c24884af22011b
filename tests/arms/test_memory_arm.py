"""The memory arm: its model family, the records its fresh processes write, the hard memory
limit, and the report section computed from the records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from sm3repro.arms.memory import arm
from sm3repro.arms.memory import verdicts as report
from sm3repro.arms.memory.family import n_parameters, parameter_shapes, theory_state_bytes
from sm3repro.optim import build_optimizer, optimizer_state_bytes
from sm3repro.parser.model import ChenManningParser
from sm3repro.report.claims import claim_by_number
from sm3repro.report.eager import EAGER_NOTE
from sm3repro.report.figures import save
from sm3repro.report.memory import judge_at, judge_memory
from sm3repro.report.sections import memory as memory_section

EWT = {"n_words": 8868, "n_tags": 52, "n_labels": 54, "n_transitions": 103}
MIB = 1024**2


def test_family_matches_the_parser_and_the_study_size():
    model = ChenManningParser(*EWT.values(), embed_dim=7, hidden=(200, 200))
    assert [tuple(p.shape) for p in model.parameters()] == parameter_shapes(7, *EWT.values())
    assert n_parameters(parameter_shapes(50, *EWT.values())) == 989_803  # the study's parser


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adam", "sm3_i", "sm3_ii"])
def test_theory_matches_the_state_the_optimizers_allocate(name):
    model = ChenManningParser(30, 5, 4, 9, embed_dim=3, hidden=(6, 5))
    optimizer, _ = build_optimizer(model.parameters(), {"name": name, "lr": 0.01})
    model(torch.randint(0, 4, (8, 48))).sum().backward()
    optimizer.step()
    shapes = [tuple(p.shape) for p in model.parameters()]
    # Measured state also counts per-tensor step counters (a float32 scalar each in torch).
    counters = 4 * len(shapes) if name in ("adagrad", "adam") else 0
    assert optimizer_state_bytes(optimizer) == theory_state_bytes(name, shapes) + counters


def test_adafactor_theory_matches_torch_adafactor_state():
    # Built directly: the registry entry for Adafactor lands separately.
    model = ChenManningParser(30, 5, 4, 9, embed_dim=3, hidden=(6, 5))
    optimizer = torch.optim.Adafactor(model.parameters())
    model(torch.randint(0, 4, (8, 48))).sum().backward()
    optimizer.step()
    shapes = [tuple(p.shape) for p in model.parameters()]
    counters = 4 * len(shapes)  # one float32 step tensor per parameter
    assert optimizer_state_bytes(optimizer) == theory_state_bytes("adafactor", shapes) + counters


def _grid_record(opt: str, embed_dim: int, batch: int, peak_mib: float, state: int) -> dict:
    shapes = parameter_shapes(embed_dim, *EWT.values())
    return {
        "status": "completed", "kind": "grid", "optimizer": opt, "embed_dim": embed_dim,
        "batch_size": batch, "parameters": n_parameters(shapes), "parameter_shapes": shapes,
        "state_bytes": state, "peak_rss_bytes": int(peak_mib * MIB), "step_s_median": 0.02,
        "optimizer_step_s_median": 0.002 if opt == "adam" else 0.001, "threads": 1,
    }  # fmt: skip


def test_report_subtracts_sgd_and_computes_theory_from_records(tmp_path):
    grid = tmp_path / "memory" / "grid"
    grid.mkdir(parents=True)
    for embed_dim, base in ((50, 400.0), (2000, 1000.0)):
        params = n_parameters(parameter_shapes(embed_dim, *EWT.values()))
        for opt, extra, state in (("sgd", 0, 0), ("adam", 8 * params / MIB, 8 * params),
                                  ("adagrad", 4 * params / MIB, 4 * params),
                                  ("sm3_ii", 1.0, 1000)):  # fmt: skip
            for batch in (64, 512):
                record = _grid_record(opt, embed_dim, batch, base + batch / 64 + extra, state)
                (grid / f"{opt}-e{embed_dim}-b{batch}.json").write_text(json.dumps(record))
    (grid / "adam-e9-b64.json").write_text('{"status": "comp')  # a torn record is ignored

    frame = report.load_grid(tmp_path / "memory")
    adam = frame[(frame.optimizer == "adam") & (frame.embed_dim == 2000)].iloc[0]
    assert adam.cost_bytes == pytest.approx(adam.state_bytes, abs=1)  # peak RSS - SGD's
    assert adam.theory_bytes == 8 * adam.parameters
    sm3 = frame[(frame.optimizer == "sm3_ii") & (frame.embed_dim == 2000)].iloc[0]
    assert sm3.theory_bytes == 4 * sum(sum(s) if len(s) > 1 else s[0]
                                       for s in parameter_shapes(2000, *EWT.values()))  # fmt: skip
    # 7.6 MiB of Adam state at the study's size is inside the noise margin; at 2000 it is not.
    below = claim_by_number(6).below
    assert judge_at(frame, 50, below)[0] == "inconclusive"
    assert judge_at(frame, 2000, below)[0] == "holds"
    assert report.speed_from(frame) == {64: 50, 512: 50}
    targets = report.theory_targets(frame).set_index(["optimizer", "batch"])
    assert targets.loc[("Adam", 64), "met"] == "yes"  # measured == theory
    assert targets.loc[("SM3-II", 512), "met"] == "yes"  # 1 MiB above SGD: within 16 MiB

    judged = judge_memory(tmp_path / "memory")  # claim 6's tiers: the smallest, the largest
    assert [(t.tier.name, t.embed_dim, t.verdict) for t in judged.tiers] == [
        ("at the study's scale", 50, "inconclusive"), ("at scale", 2000, "holds"),
    ]  # fmt: skip
    rendered = memory_section.render(judged, tmp_path / "memory")
    figure = rendered.figures["memory_at_scale"]
    (png,) = save(figure.figure, tmp_path / "figures" / "memory_at_scale", figure.formats)
    assert png.stat().st_size > 0 and figure.formats == ("png",)
    section = "\n".join(rendered.lines)
    assert "](figures/memory_at_scale.png)" in section
    assert "**inconclusive**" in section and "**holds**" in section
    assert "judged at the study's size and at the arm's largest. Rule: At this size" in section


def test_budget_table_brackets_the_largest_size(tmp_path):
    folder = tmp_path / "budget"
    folder.mkdir()
    outcomes = {("adam", 1000): True, ("adam", 1200): False, ("sm3_ii", 1200): True,
                ("sm3_ii", 1440): True, ("sm3_ii", 1728): False}  # fmt: skip
    for (opt, embed_dim), ok in outcomes.items():
        record = {"status": "completed" if ok else "out_of_memory", "optimizer": opt,
                  "embed_dim": embed_dim, "parameters": 18574 * embed_dim,
                  "limit_bytes": 1024**3, "message": None if ok else f"{opt} exceeds"}  # fmt: skip
        (folder / f"{opt}-1gib-e{embed_dim}.json").write_text(json.dumps(record))
    table = report.largest_per_budget(report.load_budget(tmp_path)).set_index("optimizer")
    assert table.loc["adam", "largest_embed_dim"] == 1000
    assert table.loc["adam", "next_fails_parameters"] == 18574 * 1200
    assert table.loc["sm3_ii", "largest_embed_dim"] == 1440


def test_step_times_of_sm3_on_its_eager_path_are_flagged(tmp_path):
    grid = tmp_path / "memory" / "grid"
    grid.mkdir(parents=True)
    impl = {"sgd": "torch.optim.SGD(fused=True)", "adam": "torch.optim.Adam(fused=True)",
            "sm3_ii": "sm3repro.SM3(variant=ii, cover=dims, kernel=eager)"}  # fmt: skip
    for opt in impl:
        for batch in (64, 512):
            record = _grid_record(opt, 50, batch, 400.0 + (opt == "adam") * 8, 1000)
            record["optimizer_impl"] = (
                impl[opt] if batch == 64 else impl[opt].replace("eager", "fused-cpp")
            )
            (grid / f"{opt}-e50-b{batch}.json").write_text(json.dumps(record))
    frame = report.load_grid(tmp_path / "memory")
    assert frame.set_index(["optimizer", "batch_size"])["sm3_eager"].to_dict() == {
        (o, b): o == "sm3_ii" and b == 64 for o in impl for b in (64, 512)
    }
    judged = judge_memory(tmp_path / "memory")
    section = "\n".join(memory_section.render(judged, tmp_path / "memory").lines)
    rows = [line for line in section.splitlines() if line.startswith("|") and "†" in line]
    assert len(rows) == 1 and "SM3-II" in rows[0] and rows[0].count("†") == 2  # b64 step cells
    speed = [line for line in section.splitlines() if line.startswith("- batch")]
    assert ["†" in line for line in speed] == [True, False]
    assert section.count(EAGER_NOTE) == 2  # under the table and under the speed lines


# -- fresh processes -------------------------------------------------------------------------
@pytest.fixture
def tiny_arm(tmp_path: Path, ewt_dir: Path) -> arm.ArmConfig:
    return arm.ArmConfig(
        results_dir=tmp_path / "memory", optimizers=("sgd", "adam"), embed_dims=(8,),
        batch_sizes=(16,), steps=2, budgets_gib=(), threads=1, data_dir=ewt_dir,
        cache_dir=tmp_path / "cache", max_train_sentences=100,
    )  # fmt: skip


@pytest.mark.slow
def test_arm_writes_complete_records_from_fresh_processes_and_resumes(tiny_arm, capsys):
    assert arm.run_arm(tiny_arm, "grid") == 0
    records = {
        p.stem: json.loads(p.read_text()) for p in (tiny_arm.results_dir / "grid").glob("*.json")
    }
    assert set(records) == {"sgd-e8-b16", "adam-e8-b16"}
    pids = set()
    for record in records.values():
        assert record["status"] == "completed" and record["steps"] == 2
        assert record["peak_rss_bytes"] > 100 * MIB and record["step_s_median"] > 0
        assert record["provenance"]["git_commit"] and len(record["losses"]) == 2
        pids.add(record["pid"])
    assert len(pids) == 2  # one process per cell
    assert records["adam-e8-b16"]["state_bytes"] == 8 * records["adam-e8-b16"]["parameters"] + 36

    capsys.readouterr()
    assert arm.run_arm(tiny_arm, "grid") == 0  # resumable: nothing is run again
    assert capsys.readouterr().out.count("done before") == 2


@pytest.mark.slow
def test_run_over_its_memory_limit_fails_in_one_line_and_leaves_no_half_record(tiny_arm):
    data = arm.prepare_data(tiny_arm, 32)
    out = tiny_arm.results_dir / "budget" / "adam-tiny.json"
    spec = {**arm._base_spec(tiny_arm, data, "budget"), "optimizer": "adam", "embed_dim": 8,
            "batch_size": 16, "steps": 2, "out": str(out), "parameters": 1}  # fmt: skip
    record = arm.run_limited(spec, 160 * MIB)  # importing torch alone needs more
    assert record["status"] == "out_of_memory" and record["oom_kills"] >= 1
    assert record["message"] == (
        "adam e8 (0.0M params) b16: exceeds the 160 MiB memory limit "
        "(killed by the kernel's OOM killer)"
    )
    assert "\n" not in record["message"]
    # The only file is the outcome written by the parent: no partial cell record, no temp file.
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    assert json.loads(out.read_text())["status"] == "out_of_memory"


def test_the_arm_logs_its_records_as_a_memory_job_in_wandb(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from wandb_offline import read_offline_run

    committed = Path(__file__).resolve().parents[2] / "results" / "memory" / "grid"
    records = sorted(committed.glob("adam-e50-b*.json"))
    assert len(records) == 2  # the arm's committed records at the study's size
    grid = tmp_path / "memory" / "grid"
    grid.mkdir(parents=True)
    for record in records:
        (grid / record.name).write_bytes(record.read_bytes())
    # In a process of its own, as `make memory` runs it: W&B started in the test process would
    # leave its service for later subprocess tests to attach to. The logger config writes
    # wandb/ into the working folder.
    code = f"from sm3repro.arms.memory.arm import log_to_wandb; log_to_wandb({str(tmp_path / 'memory')!r})"
    subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=120,
        env={**os.environ, "WANDB_MODE": "offline"},
    )  # fmt: skip
    run = read_offline_run(tmp_path)
    assert run["job_type"] == "memory"
    assert run["summary"]["grid_cells"] == 2 and run["summary"]["records"] == 2
    [artifact] = [a for a in run["artifacts"] if a["type"] == "memory-records"]
    assert set(artifact["files"]) == {r.name for r in records}


def _frame(rows: list[dict]) -> pd.DataFrame:
    """A grid frame as load_grid makes it, from (optimizer, embed_dim, cost, theory) rows."""
    base = {"batch_size": 64, "parameters": 200_700_000, "scratch_bytes": None,
            "optimizer_step_s": 0.01}  # fmt: skip
    return pd.DataFrame([{**base, **row} for row in rows])


def test_theory_targets_judge_each_optimizer_by_its_tolerance():
    """Adam and Adagrad: measured within 10% of theory; SM3: at most its state + 16 MiB; the
    boundaries themselves meet the target, a byte past them does not; SGD has none."""
    theory = 1000 * MIB
    rows = [
        {"optimizer": "sgd", "embed_dim": 10800, "cost_bytes": 0.0, "theory_bytes": 0},
        {"optimizer": "adam", "embed_dim": 10800, "cost_bytes": theory + theory // 10, "theory_bytes": theory},
        {"optimizer": "adagrad", "embed_dim": 10800, "cost_bytes": theory - theory // 10 - 1, "theory_bytes": theory},
        {"optimizer": "sm3_ii", "embed_dim": 10800, "cost_bytes": 6.0 * MIB + 16 * MIB, "theory_bytes": 6 * MIB},
        {"optimizer": "sm3_i", "embed_dim": 10800, "cost_bytes": 6.0 * MIB + 16 * MIB + 1, "theory_bytes": 6 * MIB},
        {"optimizer": "adam", "embed_dim": 50, "cost_bytes": 5 * theory, "theory_bytes": theory},
    ]  # fmt: skip
    targets = report.theory_targets(_frame(rows)).set_index("optimizer")
    assert "SGD" not in targets.index  # nothing to judge
    assert len(targets) == 4  # only the largest width is judged
    assert targets.loc["Adam", "met"] == "yes" and targets.loc["Adam", "target"] == "within 10%"
    assert targets.loc["Adagrad", "met"] == "no"
    assert (
        targets.loc["SM3-II", "met"] == "yes"
        and targets.loc["SM3-II", "target"] == "≤ state + 16 MiB"
    )
    assert targets.loc["SM3-I", "met"] == "no"
    assert targets.loc["Adam", "measured / theory"] == "1.100"
    assert (
        targets.loc["Adam", "theory MiB"] == "1000.0"
        and targets.loc["Adam", "parameters"] == "200.7M"
    )


def test_speed_from_needs_sm3_faster_at_every_larger_width():
    rows = [
        {"optimizer": o, "embed_dim": e, "optimizer_step_s": s, "cost_bytes": 0.0, "theory_bytes": 0}
        for o, e, s in [("sm3_ii", 50, 0.1), ("adam", 50, 0.2), ("sm3_ii", 270, 0.3),
                        ("adam", 270, 0.2), ("sm3_ii", 1080, 0.1), ("adam", 1080, 0.2),
                        ("sm3_ii", 3230, 0.1), ("adam", 3230, 0.2)]
    ]  # fmt: skip
    assert report.speed_from(_frame(rows)) == {64: 1080}  # slower at 270: not from 50
    slower_at_top = [r if r["embed_dim"] != 3230 or r["optimizer"] != "sm3_ii"
                     else {**r, "optimizer_step_s": 0.2} for r in rows]  # fmt: skip
    assert report.speed_from(_frame(slower_at_top)) == {64: None}  # a tie is not faster


def test_budget_brackets_without_a_completed_size_and_ignore_failures_below_it(tmp_path):
    folder = tmp_path / "budget"
    folder.mkdir()
    outcomes = {("adam", 800): False, ("adam", 1000): False, ("sm3_ii", 900): False,
                ("sm3_ii", 1200): True, ("sm3_ii", 1700): False, ("sm3_ii", 1500): False}  # fmt: skip
    for (opt, embed_dim), ok in outcomes.items():
        record = {"status": "completed" if ok else "out_of_memory", "optimizer": opt,
                  "embed_dim": embed_dim, "parameters": 18574 * embed_dim,
                  "spec": {"limit_bytes": 2 * 1024**3}, "message": f"{opt} e{embed_dim}"}  # fmt: skip
        (folder / f"{opt}-2gib-e{embed_dim}.json").write_text(json.dumps(record))
    budget = report.load_budget(tmp_path)
    assert set(budget["budget_gib"]) == {2.0}  # the limit read from the spec
    table = report.largest_per_budget(budget).set_index("optimizer")
    assert pd.isna(table.loc["adam", "largest_parameters"])
    assert table.loc["adam", "next_fails_parameters"] == 18574 * 800
    assert table.loc["sm3_ii", "largest_embed_dim"] == 1200
    assert table.loc["sm3_ii", "next_fails_parameters"] == 18574 * 1500  # the smallest above
    assert table.loc["sm3_ii", "next_fails_message"] == "sm3_ii e1500"


def test_grid_cost_needs_sgd_at_the_same_width_and_batch(tmp_path):
    grid = tmp_path / "memory" / "grid"
    grid.mkdir(parents=True)
    for opt, batch, peak in (("sgd", 64, 400.0), ("adam", 64, 410.0), ("adam", 512, 420.0)):
        record = _grid_record(opt, 50, batch, peak, 0)
        (grid / f"{opt}-e50-b{batch}.json").write_text(json.dumps(record))
    oom = {**_grid_record("sm3_ii", 50, 64, 1.0, 0), "status": "out_of_memory"}
    (grid / "sm3_ii-e50-b64.json").write_text(json.dumps(oom))  # not a completed cell
    frame = report.load_grid(tmp_path / "memory").set_index(["optimizer", "batch_size"])
    assert frame.loc[("adam", 64), "cost_bytes"] == 10 * MIB
    assert math.isnan(frame.loc[("adam", 512), "cost_bytes"])  # no SGD at batch 512
    assert "sm3_ii" not in frame.index.get_level_values("optimizer")


def test_theory_table_figures_and_rows_left_out():
    """MiB figures of the theory table; a row without SGD's baseline (NaN cost) is left out."""
    theory = 1000 * MIB
    rows = [
        {"optimizer": "adam", "embed_dim": 10800, "cost_bytes": theory + theory // 10,
         "theory_bytes": theory, "scratch_bytes": 2 * MIB},
        {"optimizer": "adagrad", "embed_dim": 10800, "cost_bytes": math.nan, "theory_bytes": theory},
    ]  # fmt: skip
    targets = report.theory_targets(_frame(rows)).set_index("optimizer")
    assert list(targets.index) == ["Adam"]  # Adagrad has no SGD run to subtract
    assert targets.loc["Adam", "measured MiB (peak RSS − SGD's)"] == "1100.0"
    assert targets.loc["Adam", "scratch MiB"] == "2.0"


def test_speed_from_stops_where_adam_has_no_cell():
    rows = [
        {"optimizer": o, "embed_dim": e, "optimizer_step_s": s, "cost_bytes": 0.0, "theory_bytes": 0}
        for o, e, s in [("sm3_ii", 50, 0.1), ("adam", 50, 0.2), ("sm3_ii", 270, 0.1)]
    ]  # fmt: skip
    assert report.speed_from(_frame(rows)) == {64: None}


def test_loaders_skip_records_that_are_not_objects_and_keep_a_plain_index(tmp_path):
    grid = tmp_path / "memory" / "grid"
    grid.mkdir(parents=True)
    for opt, embed_dim in (("sgd", 270), ("adam", 50), ("sgd", 50)):
        record = _grid_record(opt, embed_dim, 64, 400.0, 0)
        (grid / f"{opt}-e{embed_dim}-b64.json").write_text(json.dumps(record))
    (grid / "list.json").write_text("[1, 2]")  # valid JSON, not a record
    frame = report.load_grid(tmp_path / "memory")
    assert list(frame.columns).count("index") == 0 and list(frame.index) == [0, 1, 2]
    pairs = list(zip(frame.embed_dim, frame.optimizer, strict=True))
    assert pairs == [(50, "adam"), (50, "sgd"), (270, "sgd")]


def test_a_failure_at_the_largest_completed_size_is_not_the_next_one(tmp_path):
    folder = tmp_path / "budget"
    folder.mkdir()
    for name, (embed_dim, ok) in {
        "a": (1000, True),
        "b": (1000, False),
        "c": (1200, False),
    }.items():
        record = {"status": "completed" if ok else "out_of_memory", "optimizer": "adam",
                  "embed_dim": embed_dim, "parameters": 18574 * embed_dim,
                  "limit_bytes": 1024**3, "message": name}  # fmt: skip
        (folder / f"adam-{name}.json").write_text(json.dumps(record))
    table = report.largest_per_budget(report.load_budget(tmp_path)).set_index("optimizer")
    assert table.loc["adam", "next_fails_parameters"] == 18574 * 1200
