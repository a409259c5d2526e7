"""The folder tree is the architecture: imports run deploy -> flows -> tasks -> storage, never back
up, with no circle anywhere; storage/ stays below orchestration (no Prefect, no Dask); and no
stage imports another stage. Read from the source's syntax tree, lazy and TYPE_CHECKING imports
included, so a rule is broken the moment the import is written.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"storage": 0, "tasks": 1, "flows": 2, "deploy": 3}  # a module may import its own layer and those below
ORCHESTRATION = {"prefect", "prefect_dask", "distributed", "dask"}
STAGES = ("normalization", "teacher", "stats", "synthesize", "relabel", "prune", "evaluate")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for layer in LAYERS for p in sorted((root / layer).rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: the project modules it imports}``; a name that is not a module (a class) is dropped."""
    return {name: {other for other in imported_names(path) if other in modules and other != name}
            for name, path in modules.items()}


def stage_of(module: str) -> str | None:
    """The stage a module belongs to (``tasks.stages.synthesize.recovery`` -> ``synthesize``), if any."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["tasks", "stages"] and len(parts) > 2 and parts[2] in STAGES else None


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle once, as the list of modules around it (depth-first search)."""
    found, done, path = [], set(), []

    def visit(module: str) -> None:
        if module in path:
            found.append(path[path.index(module):] + [module])
            return
        if module in done:
            return
        path.append(module)
        for other in sorted(graph[module]):
            visit(other)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    return found


MODULES = source_modules()
GRAPH = import_graph(MODULES)


def test_the_source_is_all_read():
    assert {name.split(".")[0] for name in MODULES} == set(LAYERS)
    assert {"tasks.stages.teacher", "tasks.stages.synthesize.stage", "storage.artifacts", "flows.cli"} <= set(MODULES)
    assert sum(map(len, GRAPH.values())) > 100, "the graph found almost no imports"


def test_no_import_goes_up_a_layer():
    upward = [f"{a} -> {b}" for a, targets in GRAPH.items() for b in sorted(targets)
              if LAYERS[b.split(".")[0]] > LAYERS[a.split(".")[0]]]
    assert upward == [], "imports run deploy -> flows -> tasks -> storage"


def test_storage_imports_no_orchestration():
    offending = {name: sorted(top for top in {n.split(".")[0] for n in imported_names(path)} if top in ORCHESTRATION)
                 for name, path in MODULES.items() if name.startswith("storage")}
    assert {name: tops for name, tops in offending.items() if tops} == {}


def test_no_stage_imports_another_stage():
    crossing = [f"{a} -> {b}" for a, targets in GRAPH.items() for b in sorted(targets)
                if stage_of(a) and stage_of(b) and stage_of(a) != stage_of(b)]
    assert {s for s in map(stage_of, MODULES) if s} == set(STAGES)
    assert crossing == [], "a stage finds another's files in storage/, not by importing it"


def test_no_import_circle():
    assert circles(GRAPH) == []


def test_the_rules_catch_a_circle_an_upward_import_and_a_crossing(tmp_path):
    """The checks themselves can fail: on a small tree that breaks each rule once."""
    files = {
        "storage/a.py": "import prefect\nfrom tasks.b import x\n",
        "tasks/b.py": "from tasks.c import y\n",
        "tasks/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tasks.b import x\n",
        "tasks/stages/teacher.py": "from tasks.stages.stats import z\n",
        "tasks/stages/stats.py": "",
        "flows/f.py": "",
        "deploy/d.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = source_modules(tmp_path)
    graph = import_graph(modules)
    assert circles(graph) == [["tasks.b", "tasks.c", "tasks.b"]]
    assert "tasks.b" in graph["storage.a"] and "prefect" in {n.split(".")[0] for n in imported_names(modules["storage.a"])}
    assert stage_of("tasks.stages.teacher") == "teacher" and graph["tasks.stages.teacher"] == {"tasks.stages.stats"}
