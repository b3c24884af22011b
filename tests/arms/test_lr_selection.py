"""lr selection: dev-best lr per cell, ties to the smaller lr, grids extended past a best end."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sm3repro.arms.lr_selection.rule import GRID, as_frame, choose, half_decade, ladder_lr


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
