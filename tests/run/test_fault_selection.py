"""The fault suite cannot pass by trying nothing: a case that gives no outcome fails, and a case
chosen by a name no case has raises. Quick: no harness process is started."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import faultcases as fc
import pytest
from faultlib import Bench, Lab, Outcome, UnknownCase, assert_handled, case_outcomes, select

REPO_ROOT = Path(__file__).resolve().parents[2]


def _outcome(handled: bool) -> Outcome:
    out = Outcome("a fault", "handled")
    out.check(handled, "it was not")
    return out


def test_assert_handled_fails_without_an_outcome() -> None:
    with pytest.raises(AssertionError, match="no outcome"):
        assert_handled()
    with pytest.raises(AssertionError, match="not outcomes"):
        assert_handled(None)  # type: ignore[arg-type]  # a case function that returned nothing
    with pytest.raises(AssertionError, match="it was not"):
        assert_handled(_outcome(True), _outcome(False))
    assert_handled(_outcome(True))


@pytest.mark.parametrize("returned", [[], None, [None], ()])
def test_a_case_with_no_outcome_is_a_failing_row(returned: object) -> None:
    rows = case_outcomes("group: case", returned)
    assert [r.fault for r in rows] == ["group: case"]
    assert not rows[0].handled and "no outcome" in rows[0].problems[0]


def test_a_case_with_outcomes_keeps_them() -> None:
    outcomes = [_outcome(True), _outcome(False)]
    assert case_outcomes("group: case", outcomes) == outcomes
    mixed = case_outcomes("group: case", [outcomes[0], None])
    assert mixed[0] is outcomes[0] and not mixed[-1].handled


def test_selection_by_an_unknown_name_raises_naming_it() -> None:
    with pytest.raises(UnknownCase, match="'no such case'") as info:
        select(fc.BAD_TREEBANKS, ["cycle", "no such case"], lambda c: c.name, "bad-treebank case")
    assert "'cycle'" in str(info.value)  # the known names are listed too
    picked = select(fc.BAD_TREEBANKS, ["no root", "cycle"], lambda c: c.name, "case")
    assert [c.name for c in picked] == ["no root", "cycle"]  # in the order named


def test_named_samples_resolve_to_cases() -> None:
    # faultcases chooses the sample when it loads: a missing name fails its import
    assert len(fc.CLI_TREEBANK_SAMPLE) == 6
    assert all(isinstance(c, fc.BadInput) for c in fc.CLI_TREEBANK_SAMPLE)


def test_bad_configs_with_an_unknown_kind_raises_before_running(tmp_path: Path) -> None:
    lab = Lab(Bench(tmp_path, tmp_path, tmp_path / "no-reference", tmp_path), tmp_path / "lab")
    with pytest.raises(UnknownCase, match="'epochs < 0'"):
        fc.bad_configs(lab, ["epochs = 0", "epochs < 0"])
    assert not (lab.root / "results").exists()  # nothing seeded, nothing started


def test_fault_suite_only_matching_nothing_exits_with_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = REPO_ROOT / "scripts" / "fault_suite.py"
    spec = importlib.util.spec_from_file_location("fault_suite", path)
    assert spec is not None and spec.loader is not None
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    with pytest.raises(SystemExit) as info:
        suite.main(["--only", "no such fault"])
    assert "no case matches --only 'no such fault'" in str(info.value.code)
    assert "building the reference sweep" not in capsys.readouterr().err
