"""lr selection: dev-best lr per cell, ties to the smaller lr, grids extended past a best end."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
from omegaconf import OmegaConf

from sm3repro.arms.lr_selection.rule import (
    GRID,
    as_frame,
    choose,
    half_decade,
    ladder_lr,
    missing_lrs,
    rerun_command,
    still_to_run,
    sweep_overrides,
)
from sm3repro.arms.lr_selection.tuned_config import (
    configured_path,
    out_of_date,
    tuned_yaml,
    write_tuned,
)
from sm3repro.run.grid import config_dir


def _cell(optimizer: str, batch: int, scores: dict[float, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"optimizer": optimizer, "batch_size": batch, "lr": lr, "dev_las_macro": s}
            for lr, s in scores.items()
        ]
    )


def test_half_decade_ladder_round_trips() -> None:
    assert [ladder_lr(k) for k in range(-8, 3)] == [
        0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0,
    ]  # fmt: skip
    for lr in (0.0003, 0.001, 0.003, 0.01, 0.3, 1.0):
        assert ladder_lr(half_decade(lr)) == lr


def test_picks_the_dev_best_inside_the_grid() -> None:
    (choice,) = choose(_cell("adam", 64, {0.001: 0.80, 0.003: 0.83, 0.01: 0.20, 0.03: 0.1, 0.1: 0}))
    assert choice.lr == 0.003 and choice.dev_las_macro == 0.83
    assert choice.extend_to is None and choice.pending == () and choice.settled


def test_ties_go_to_the_smaller_lr() -> None:
    scores = {0.001: 0.5, 0.003: 0.7, 0.01: 0.7, 0.03: 0.6, 0.1: 0.1}
    (choice,) = choose(_cell("sm3_ii", 512, scores).sample(frac=1.0, random_state=3))
    assert choice.lr == 0.003


def test_a_best_at_the_top_end_extends_upwards_until_it_is_inside() -> None:
    scores = {0.001: 0.0, 0.003: 0.0, 0.01: 0.25, 0.03: 0.5, 0.1: 0.7}
    (choice,) = choose(_cell("sgd", 512, scores))
    assert choice.lr == 0.1 and choice.extend_to == 0.3 and not choice.settled
    (choice,) = choose(_cell("sgd", 512, {**scores, 0.3: 0.74}))
    assert choice.lr == 0.3 and choice.extend_to == 1.0
    (choice,) = choose(_cell("sgd", 512, {**scores, 0.3: 0.74, 1.0: 0.72}))
    assert choice.lr == 0.3 and choice.extend_to is None and choice.settled


def test_a_best_at_the_bottom_end_extends_downwards() -> None:
    (choice,) = choose(_cell("adam", 64, {0.001: 0.8, 0.003: 0.7, 0.01: 0.2, 0.03: 0, 0.1: 0}))
    assert choice.lr == 0.001 and choice.extend_to == 0.0003


def test_diverged_runs_never_win_and_missing_grid_points_keep_a_cell_open() -> None:
    (choice,) = choose(_cell("adam", 64, {0.01: math.nan, 0.003: 0.6, 0.001: 0.5}))
    assert choice.lr == 0.003 and choice.pending == (0.03, 0.1) and not choice.settled


def test_each_cell_is_chosen_on_its_own() -> None:
    frame = pd.concat(
        [
            _cell("sgd", 64, dict(zip(GRID, (0.1, 0.2, 0.3, 0.6, 0.5), strict=True))),
            _cell("sgd", 512, dict(zip(GRID, (0.0, 0.0, 0.1, 0.3, 0.5), strict=True))),
        ]
    )
    table = as_frame(choose(frame)).set_index("batch_size")
    assert table.loc[64, "chosen_lr"] == 0.03 and table.loc[64, "settled"]
    assert table.loc[512, "chosen_lr"] == 0.1 and table.loc[512, "extend_to"] == 0.3


def test_two_records_for_one_lr_are_an_error() -> None:
    with pytest.raises(ValueError, match="two records for one lr"):
        choose(_cell("sgd", 64, {0.01: 0.5}).pipe(lambda f: pd.concat([f, f])))


def test_the_ladder_stops_at_its_limits() -> None:
    """A best at the ladder's ends is final: no lr past 10 or below 1e-5 is ever proposed."""
    top = {0.3: 0.1, 1.0: 0.2, 3.0: 0.3, 10.0: 0.4}
    (choice,) = choose(_cell("sgd", 64, {**dict.fromkeys(GRID, 0.0), **top}))
    assert choice.lr == 10.0 and choice.extend_to is None
    bottom = {1e-5: 0.9, 3e-5: 0.8, 1e-4: 0.7, 3e-4: 0.6}
    (choice,) = choose(_cell("adam", 64, {**dict.fromkeys(GRID, 0.0), **bottom}))
    assert choice.lr == 1e-5 and choice.extend_to is None
    (choice,) = choose(_cell("adam", 64, {**dict.fromkeys(GRID, 0.0), 3e-5: 0.9, 1e-4: 0.1}))
    assert choice.extend_to == 1e-5  # the limit itself is still on the ladder


def test_what_a_cell_still_has_to_run() -> None:
    assert missing_lrs(None) == list(GRID)
    (open_cell,) = choose(_cell("adam", 64, {0.003: 0.6, 0.001: 0.7}))
    assert missing_lrs(open_cell) == [0.0003, 0.01, 0.03, 0.1]  # pending grid + the extension
    (settled,) = choose(_cell("adam", 64, dict(zip(GRID, (0.1, 0.9, 0.2, 0.1, 0.0), strict=True))))
    assert missing_lrs(settled) == []
    cells = [("sgd", 512), ("adam", 64), ("sgd", 64)]
    other = dataclasses.replace(settled, optimizer="sgd", batch_size=512)
    todo = still_to_run([open_cell, other], cells)
    assert todo == [(("adam", 64), [0.0003, 0.01, 0.03, 0.1]), (("sgd", 64), list(GRID))]


def test_a_grid_point_counts_as_tried_up_to_float_noise() -> None:
    scores = {0.001: 0.1, 0.003 * (1 + 1e-12): 0.2, 0.01: 0.9, 0.03: 0.3, 0.1: 0.0}
    (choice,) = choose(_cell("sgd", 64, scores))
    assert choice.pending == () and choice.settled


def test_the_sweep_runs_exactly_the_missing_lrs_of_one_cell() -> None:
    overrides = sweep_overrides("sm3_ii", 64, [0.0003, 0.1])
    assert overrides == ["experiment=lr_grid", "optimizer=sm3_ii", "batch_size=64",
                         "optimizer.lr=0.0003,0.1"]  # fmt: skip
    command = rerun_command("sm3_ii", 64, [0.3], ["data.dir=/x"])
    assert command == ("python -m sm3repro.train -m experiment=lr_grid optimizer=sm3_ii "
                       "batch_size=64 optimizer.lr=0.3 data.dir=/x")  # fmt: skip


def test_the_choices_table_says_what_is_tried_pending_and_settled() -> None:
    (choice,) = choose(_cell("adam", 512, {0.003: 0.6, 0.001: 0.7, 0.01: 0.5}))
    row = as_frame([choice]).iloc[0]
    assert row["lrs_tried"] == "0.001 0.003 0.01" and row["pending"] == "0.03 0.1"
    assert row["chosen_lr"] == 0.001 and row["extend_to"] == 0.0003 and not row["settled"]


def test_the_top_limit_itself_is_still_proposed() -> None:
    scores = {**dict.fromkeys(GRID, 0.0), 0.3: 0.1, 1.0: 0.2, 3.0: 0.3}
    (choice,) = choose(_cell("sgd", 64, scores))
    assert choice.lr == 3.0 and choice.extend_to == 10.0


def test_choices_keep_the_records_order_and_cannot_be_edited() -> None:
    frame = pd.concat([_cell("sgd", 512, {0.01: 0.5}), _cell("adam", 64, {0.01: 0.5})])
    choices = choose(frame)
    assert [(c.optimizer, c.batch_size) for c in choices] == [("sgd", 512), ("adam", 64)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        choices[0].lr = 0.1


def _choices_and_scores() -> tuple[list, pd.DataFrame]:
    rows = []
    for optimizer, batch, best in (("sgd", 512, 0.1), ("sgd", 64, 0.03), ("adam", 64, 0.003)):
        for lr in GRID:
            rows.append({"optimizer": optimizer, "batch_size": batch, "lr": lr,
                         "dev_las_macro": 0.9 if lr == best else 0.5,
                         "run_id": f"{optimizer}-b{batch}-{lr:g}"})  # fmt: skip
    scores = pd.DataFrame(rows)
    return choose(scores), scores


def test_the_tuned_config_holds_one_lr_per_cell_with_its_record(tmp_path) -> None:
    choices, scores = _choices_and_scores()
    text = tuned_yaml(choices, scores, "results")
    table = OmegaConf.create(text)["lr_table"]
    assert {opt: dict(cells) for opt, cells in table.items()} == {
        "sgd": {"b64": 0.03, "b512": 0.1}, "adam": {"b64": 0.003},
    }  # fmt: skip
    sgd = text[text.index("  sgd:") : text.index("  adam:")]
    assert sgd.index("b64:") < sgd.index("b512:")  # batches in order within an optimizer
    assert "b512: 0.1  # dev LAS macro 0.9000, sgd-b512-0.1; UNSETTLED (provisional)" in sgd
    assert "b64: 0.03  # dev LAS macro 0.9000, sgd-b64-0.03; settled" in sgd
    path = tmp_path / "tuned.yaml"
    write_tuned(path, choices, scores, "results")
    assert path.read_text() == text and out_of_date(choices, path) == []


def test_out_of_date_names_every_cell_the_config_lacks_or_differs_on(tmp_path) -> None:
    choices, _ = _choices_and_scores()
    path = tmp_path / "tuned.yaml"
    path.write_text("lr_table:\n  sgd:\n    b64: 0.03\n    b512: 0.3\n")
    assert out_of_date(choices, path) == ["sgd@512", "adam@64"]  # another lr; no entry at all
    path.write_text("experiment_name: tuned_lr\n")  # no table
    assert out_of_date(choices, path) == ["sgd@512", "sgd@64", "adam@64"]
    assert configured_path() == config_dir() / "experiment" / "tuned_lr.yaml"
    assert configured_path().is_file()
