"""The package's shape, checked: the size limits the code keeps, no import cycles between its
modules, the layers data flows through (pyproject.toml's import-linter contract, run by
`make lint`), and scripts that stand on the package alone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sm3repro"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_the_line_limit() -> None:
    # the C++ kernel's sources too: they are read as modules are
    sources = [*_modules(), *sorted(PACKAGE.rglob("*.cpp"))]
    assert any(p.suffix == ".cpp" for p in sources)
    long = {str(p.relative_to(ROOT)): n for p in sources
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}  # fmt: skip
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_the_line_limit() -> None:
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # Every import counts, function-level ones too: a lazy import is still a dependency.
    return grimp.build_graph("sm3repro", exclude_type_checking_imports=True)


def _cycles(graph: grimp.ImportGraph) -> set[str]:
    """Every import a -> b that b leads back from, as the cycle's path."""
    cycles = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.add(" -> ".join((importer, *back)))
    return cycles


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_the_cycle_check_sees_a_cycle() -> None:
    toy = grimp.ImportGraph()
    for module in ("pkg", "pkg.low", "pkg.mid", "pkg.high"):
        toy.add_module(module)
    toy.add_import(importer="pkg.high", imported="pkg.mid")
    toy.add_import(importer="pkg.mid", imported="pkg.low")
    assert not _cycles(toy)
    toy.add_import(importer="pkg.low", imported="pkg.high")
    assert "pkg.low -> pkg.high -> pkg.mid -> pkg.low" in _cycles(toy)


def test_layers_hold() -> None:
    """pyproject.toml's import-linter contract: each layer imports only the ones below it (the
    report is read by nothing that runs or records)."""
    lint = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-2000:]


def test_scripts_never_import_tests() -> None:
    # An import of tests/, or tests/ put on sys.path (copying tests/ to run them is fine).
    pattern = re.compile(
        r"^\s*(from|import)\s+tests\b|sys\.path\.(insert|append)\([^\n]*[\"']tests[\"']", re.M
    )
    offenders = [p.name for p in (ROOT / "scripts").glob("*.py") if pattern.search(p.read_text())]
    assert not offenders, f"scripts importing from tests/: {offenders}"
