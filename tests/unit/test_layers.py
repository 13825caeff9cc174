"""Imports point down: schemas <- runtime <- services (streams, consumers, retrain_jobs) <- deploy.

Read from the source with ``ast`` (imports inside functions count too), so a lazy import that
climbs a layer fails here as surely as a top-level one.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYER = {"schemas": 0, "runtime": 1, "streams": 2, "consumers": 2, "retrain_jobs": 2, "deploy": 3}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & LAYER.keys()


def _package_imports() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> files that import it."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for package in LAYER:
        for path in sorted((REPO / package).rglob("*.py")):
            for target in _imports(path) - {package}:
                graph[package][target].append(str(path.relative_to(REPO)))
    return graph


def test_no_package_imports_a_higher_layer() -> None:
    wrong = [
        f"{f} ({pkg}, layer {LAYER[pkg]}) imports {target} (layer {LAYER[target]})"
        for pkg, targets in _package_imports().items()
        for target, files in targets.items()
        if LAYER[target] > LAYER[pkg]
        for f in files
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_packages() -> None:
    graph = _package_imports()
    cycles = [
        f"{a} <-> {b}: {graph[a][b][0]} and {graph[b][a][0]}"
        for a in graph
        for b in graph[a]
        if a < b and a in graph.get(b, {})
    ]
    assert not cycles, "\n".join(cycles)


def test_the_check_sees_a_climbing_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from deploy.cli import main\n    import runtime.kafka\n")
    assert _imports(bad) == {"deploy", "runtime"}


def _module_imports() -> dict[str, set[str]]:
    """module (dotted) -> the project modules it imports, lazy imports included."""
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts): p for pkg in LAYER for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def test_no_import_cycle_between_modules() -> None:
    """E.g. the CLI imports the demo, so the demo must not import the CLI (even lazily)."""
    graph, state, cycles = _module_imports(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]) if target in path else target)
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)
