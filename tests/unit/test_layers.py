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
