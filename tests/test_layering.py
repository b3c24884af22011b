"""The package's import graph, read from the source (nothing is imported): no cycles between
modules or between packages, and the report is read by nothing that runs or records."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sm3repro"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _target(name: str, modules: dict[str, Path]) -> str:
    """The module ``name`` lives in (a name imported from a module is that module)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every sm3repro module ``name`` imports, at any depth (function-level imports count);
    imports under ``if TYPE_CHECKING:`` do not run and are left out."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    typing_only = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            typing_only |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {_target(a.name, modules) for a in node.names if a.name.startswith("sm3repro")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            if base.startswith("sm3repro"):
                found |= {_target(f"{base}.{a.name}", modules) for a in node.names}
    return found - {name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt in graph and nxt not in state and (found := visit(nxt)) is not None:
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def _package(module: str, modules: dict[str, Path]) -> str:
    """``sm3repro.<package>`` for a module of a subpackage; a top-level module is its own."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and modules[module].name != "__init__.py"):
        return module
    return ".".join(parts[:2])


def test_no_import_cycle_between_modules() -> None:
    assert _cycle(_graph()) is None


def test_no_import_cycle_between_packages() -> None:
    modules = _modules()
    packages: dict[str, set[str]] = {}
    for module, imported in _graph().items():
        here = _package(module, modules)
        there = {_package(m, modules) for m in imported} - {here}
        packages.setdefault(here, set()).update(there)
    assert _cycle(packages) is None


def test_nothing_that_runs_or_records_reads_the_report() -> None:
    for module, imported in _graph().items():
        if module.startswith(("sm3repro.arms", "sm3repro.run", "sm3repro.record")):
            assert not any(m.startswith("sm3repro.report") for m in imported), module
