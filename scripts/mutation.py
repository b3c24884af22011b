"""Mutation testing (cosmic-ray) of the code that decides results, one scope at a time.

    python scripts/mutation.py                        # every scope, in order
    python scripts/mutation.py claims resources       # some scopes
    python scripts/mutation.py sm3 --budget-min 40    # stop after 40 minutes (resumable)
    python scripts/mutation.py sm3 --resume           # carry on where a stopped run left off
    python scripts/mutation.py claims --retest-survivors  # after adding tests: survivors only

Each scope mutates a few files (or only the named functions in them) and runs only the test files
that cover them, in a copy of the project under mutation/<scope>/, so a stopped run never leaves
a mutated file in the working tree. Prints the share of mutants killed per scope and writes the
survivors' diffs to mutation/<scope>/survivors.txt.
"""

from __future__ import annotations

import argparse
import ast
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COSMIC_RAY = str(Path(sys.executable).parent / "cosmic-ray")  # installed beside this Python
WORK = ROOT / "mutation"


@dataclass(frozen=True)
class Scope:
    """Files to mutate (path -> function names to mutate, empty: the whole file) and tests."""

    modules: dict[str, tuple[str, ...]]
    tests: tuple[str, ...]
    target: float  # share of mutants the tests should kill
    timeout_s: float = 600.0  # one test run; a mutant that hangs past it counts as killed
    pytest_args: tuple[str, ...] = field(default=())


SCOPES: dict[str, Scope] = {
    # claim judging: the rules (data) and the comparisons
    "claims": Scope(
        modules={"sm3repro/report/claims.py": (), "sm3repro/report/judge.py": ()},
        # and the tests of the claims' entries as records (tiers, named optimizers, their words)
        tests=(
            "tests/report/test_claim_rules.py",
            "tests/report/test_report_membership.py::test_tiers_and_named_optimizers_are_entries_of_the_claims",
            "tests/report/test_report_membership.py::test_each_claim_is_one_complete_record",
        ),
        target=0.90,
        timeout_s=300,
    ),
    # the tables' seed statistics and ours-vs-study differences and ratios
    "tables": Scope(
        modules={
            "sm3repro/report/tables.py": (
                "aggregate",
                "_round",
                "_rows",
                "_vs_adam",
                "table1",
                "table2",
                "table3",
            ),
        },  # fmt: skip
        tests=("tests/report/test_report_tables.py",),
        target=0.90,
        timeout_s=300,
    ),
    # CPU% and runtime (claims 3, 4) and peak RSS (claim 6). The two timing tests of
    # test_resources.py that need an idle core, and the two training runs, are left out: on a
    # busy machine they fail without any mutant.
    "resources": Scope(
        modules={"sm3repro/run/resources.py": ()},
        tests=("tests/run/test_measurements.py", "tests/run/test_resources.py"),
        target=0.80,
        timeout_s=300,
        pytest_args=(
            "-k",
            "not busy_thread and not competing_process and not exclude_dev_evaluation "
            "and not resumed_run",
        ),
    ),
    # SM3's optimizer class and functional core (the file the target names). The C++ kernel is
    # not Python; its tests compare it with the reference step.
    "sm3": Scope(
        modules={"sm3repro/optim/sm3/optimizer.py": ()},
        tests=("tests/optim/test_sm3.py", "tests/optim/test_sm3_momentum.py"),
        target=0.90,
        timeout_s=600,
    ),
    # the forloop fallback (no compiler, or a parameter the kernel cannot take): its tiles
    "sm3_eager": Scope(
        modules={"sm3repro/optim/sm3/eager.py": ()},
        tests=("tests/optim/test_sm3.py", "tests/optim/test_sm3_momentum.py"),
        target=0.90,
        timeout_s=600,
    ),
    # the training loop's model selection and measurement, and word dropout
    "train": Scope(
        modules={
            "sm3repro/run/train.py": ("evaluate_epoch", "_resources", "_score_test"),
            "sm3repro/run/state.py": ("TrainingState.note_dev", "weight_average"),
            "sm3repro/parser/model.py": ("ChenManningParser.__init__", "ChenManningParser.embed"),
        },
        # the training loop's tests, and the one reading the dev points evaluate_epoch records
        tests=(
            "tests/run/test_selection_and_averaging.py",
            "tests/run/test_measurements.py",
            "tests/run/test_step_timing.py::test_dev_points_lie_on_the_training_time_axis",
        ),
        target=0.80,
        timeout_s=900,
    ),
    # the memory arm's verdicts: theory lines (the catalog's state per optimizer), the
    # tolerances they are judged by, and the budget table
    "memory_verdicts": Scope(
        # The family's functions, not its width ladders (a width one off is as valid a grid).
        modules={
            "sm3repro/arms/memory/verdicts.py": (),
            "sm3repro/arms/memory/family.py": (
                "parameter_shapes",
                "n_parameters",
                "theory_state_bytes",
            ),
        },
        tests=("tests/arms/test_memory_arm.py",),
        target=0.90,
        timeout_s=600,
        # Not the arm's own processes (minutes, not verdicts) nor its W&B upload of the
        # committed records (the mutation copy holds no results/).
        pytest_args=("-m", "not slow", "-k", "not logs_its_records"),
    ),
    # lr selection: the ladder, the settled rule, the choices and the tuned yaml
    "lr_selection": Scope(
        modules={
            "sm3repro/arms/lr_selection/rule.py": (),
            "sm3repro/arms/lr_selection/tuned_config.py": (),
        },
        tests=("tests/arms/test_lr_selection.py",),
        target=0.90,
        timeout_s=300,
    ),
}

# A sufficient subset of cosmic-ray's operators, to keep a scope within tens of minutes on two
# cores: each arithmetic operator becomes its inverse, each comparison its boundary neighbour and
# its negation (`<` -> `<=`, `>=`). The other replacements (bit shifts of floats, `is` on numbers,
# `a + b` -> `a % b`, removing @dataclass) crash at once or duplicate these.
KEPT_REPLACEMENTS = {
    "ReplaceBinaryOperator": {"Add_Sub", "Sub_Add", "Mul_Div", "Div_Mul", "FloorDiv_Mul", "Pow_Mul"},
    "ReplaceComparisonOperator": {
        "Lt_LtE", "Lt_GtE", "LtE_Lt", "LtE_Gt", "Gt_GtE", "Gt_LtE", "GtE_Gt", "GtE_Lt",
        "Eq_NotEq", "NotEq_Eq",
    },
    "ReplaceUnaryOperator": {"USub_UAdd", "Delete_USub", "Delete_Not"},
}  # fmt: skip
EXCLUDED_OPERATORS = {"core/RemoveDecorator"}


def in_sample(operator: str) -> bool:
    family, _, replacement = operator.removeprefix("core/").partition("_")
    if operator in EXCLUDED_OPERATORS:
        return False
    return family not in KEPT_REPLACEMENTS or replacement in KEPT_REPLACEMENTS[family]


def rounding_digits(path: Path) -> set[tuple[int, int]]:
    """Start positions of the digits argument of every ``round(x, digits)``: how many decimals a
    record keeps is presentation, and mutating it only adds mutants no rule depends on."""
    tree = ast.parse(path.read_text())
    return {
        (node.args[1].lineno, node.args[1].col_offset)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "round"
        and len(node.args) == 2
    }


COPIED = ("sm3repro", "tests", "conf", "pyproject.toml")


def function_spans(path: Path, names: tuple[str, ...]) -> list[tuple[int, int]]:
    """Line spans of the named top-level functions or ``Class.method`` s in ``path``."""
    tree = ast.parse(path.read_text())
    spans = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            spans[node.name] = (node.lineno, node.end_lineno)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    spans[f"{node.name}.{item.name}"] = (item.lineno, item.end_lineno)
    missing = [n for n in names if n not in spans]
    if missing:
        raise SystemExit(f"{path}: no function {', '.join(missing)} (update SCOPES)")
    return [spans[n] for n in names]


def config_text(scope: Scope) -> str:
    tests = " ".join(scope.tests)
    extra = " ".join(shlex.quote(arg) for arg in scope.pytest_args)
    modules = ", ".join(f'"{m}"' for m in scope.modules)
    return (
        "[cosmic-ray]\n"
        f"module-path = [{modules}]\n"
        f"timeout = {scope.timeout_s}\n"
        "excluded-modules = []\n"
        f'test-command = "{sys.executable} -m pytest -x -q -p no:cacheprovider '
        f'{extra} {tests}"\n'
        "\n[cosmic-ray.distributor]\nname = 'local'\n"
    )


def prepare(name: str, scope: Scope) -> tuple[Path, Path, Path]:
    """A fresh copy of the project, a config and an initialised session with the scope's mutants."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    base = WORK / name
    shutil.rmtree(base, ignore_errors=True)
    tree = base / "tree"
    for item in COPIED:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, tree / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            tree.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tree / item)
    for module in scope.modules:  # unmutated sources, to restore after a stopped run
        (base / "pristine" / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / module, base / "pristine" / module)
    config, session = base / "config.toml", base / "session.sqlite"
    config.write_text(config_text(scope))
    subprocess.run([COSMIC_RAY, "init", str(config), str(session)], cwd=tree, check=True)

    spans = {Path(m): function_spans(tree / m, f) for m, f in scope.modules.items() if f}
    digits = {Path(m): rounding_digits(tree / m) for m in scope.modules}
    skipped = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in db.pending_work_items:
            for m in item.mutations:
                outside = Path(m.module_path) in spans and not any(
                    a <= m.start_pos[0] <= b for a, b in spans[Path(m.module_path)]
                )
                rounding = tuple(m.start_pos) in digits[Path(m.module_path)]
                if outside or rounding or not in_sample(m.operator_name):
                    skipped.append(item.job_id)
                    break
        db.set_multiple_results(
            skipped, WorkResult(output="out of scope", worker_outcome=WorkerOutcome.SKIPPED)
        )
    return tree, config, session


def reopen_survivors(name: str, scope: Scope) -> tuple[Path, Path, Path]:
    """The stopped or finished session with the working tree's tests and the scope's test list
    in, and its survivors pending again: after adding tests, only the survivors run again."""
    import sqlite3

    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome

    base = WORK / name
    tree, config, session = base / "tree", base / "config.toml", base / "session.sqlite"
    changed = [
        m for m in scope.modules if (base / "pristine" / m).read_bytes() != (ROOT / m).read_bytes()
    ]
    if changed:  # the session's mutants are positions in the old source
        raise SystemExit(f"{', '.join(changed)} changed since the session began: run it afresh")
    shutil.rmtree(tree / "tests")
    shutil.copytree(ROOT / "tests", tree / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    config.write_text(config_text(scope))  # the scope's test list as it is now
    with use_db(str(session), WorkDB.Mode.open) as db:
        survived = [
            (item.job_id,)
            for item, result in db.completed_work_items
            if result.test_outcome == TestOutcome.SURVIVED
        ]
    with sqlite3.connect(session) as db:
        db.executemany("DELETE FROM work_results WHERE job_id = ?", survived)
    return tree, config, session


def baseline(tree: Path, scope: Scope) -> None:
    """The scope's tests must pass unmutated, else every mutant would count as killed."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run([*command, *scope.pytest_args, *scope.tests], cwd=tree)
    if proc.returncode != 0:
        raise SystemExit(
            f"the tests fail without mutations (exit {proc.returncode}); fix them first"
        )


def execute(tree: Path, config: Path, session: Path, budget_s: float | None) -> bool:
    """Run the pending mutants; False if the budget ran out first (the session resumes later)."""
    proc = subprocess.Popen(
        [COSMIC_RAY, "exec", str(config), str(session)], cwd=tree, start_new_session=True
    )
    try:
        proc.wait(timeout=budget_s)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # cosmic-ray and the test run it started
        proc.wait()
        # a mutant may still be applied: put the unmutated sources back (its job stays pending)
        for pristine in (tree.parent / "pristine").rglob("*.py"):
            shutil.copy2(pristine, tree / pristine.relative_to(tree.parent / "pristine"))
        return False


def score(name: str, scope: Scope, session: Path) -> str:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    killed, survived, pending = 0, [], 0
    with use_db(str(session), WorkDB.Mode.open) as db:
        done = {item.job_id for item, _ in db.completed_work_items}
        pending = sum(1 for item in db.work_items if item.job_id not in done)
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            if result.test_outcome == TestOutcome.SURVIVED:
                m = item.mutations[0]
                survived.append(
                    f"{m.module_path}:{m.start_pos[0]} {m.operator_name}\n{result.diff}"
                )
            else:  # killed, incompetent (crashed on import) or timed out
                killed += 1
    (session.parent / "survivors.txt").write_text("\n".join(survived))
    total = killed + len(survived)
    share = killed / total if total else float("nan")
    status = "ok" if share >= scope.target else "BELOW TARGET"
    return (
        f"{name}: {killed}/{total} mutants killed ({share:.1%}; target {scope.target:.0%}: "
        f"{status}), {len(survived)} survived, {pending} not run"
        + (f"; survivors in {session.parent / 'survivors.txt'}" if survived else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scopes", nargs="*", help=f"of {', '.join(SCOPES)} (default: all)")
    parser.add_argument("--budget-min", type=float, help="stop each scope after this long")
    parser.add_argument("--resume", action="store_true", help="continue the stopped session")
    parser.add_argument(
        "--retest-survivors",
        action="store_true",
        help="rerun the session's surviving mutants against the current tests",
    )
    args = parser.parse_args(argv)
    # the tests in a scope's copy read the EWT files where `make data` put them in this checkout
    os.environ.setdefault("SM3REPRO_DATA", str((ROOT / "data" / "ud-english-ewt").resolve()))
    unknown = set(args.scopes) - SCOPES.keys()
    if unknown:
        parser.error(f"unknown scope {', '.join(sorted(unknown))}; choose from {', '.join(SCOPES)}")
    lines = []
    for name in args.scopes or list(SCOPES):
        scope, base = SCOPES[name], WORK / name
        if args.retest_survivors:
            tree, config, session = reopen_survivors(name, scope)
        elif args.resume and (base / "session.sqlite").exists():
            tree, config, session = base / "tree", base / "config.toml", base / "session.sqlite"
        else:
            tree, config, session = prepare(name, scope)
        os.environ["PYTHONPATH"] = str(tree)  # the copy's sm3repro, not the working tree's
        start = time.monotonic()
        if not args.resume:
            baseline(tree, scope)
        budget = args.budget_min * 60 if args.budget_min else None
        finished = execute(tree, config, session, budget)
        minutes = (time.monotonic() - start) / 60
        lines.append(
            score(name, scope, session)
            + f" [{minutes:.0f} min{'' if finished else ', budget spent'}]"
        )
        print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
