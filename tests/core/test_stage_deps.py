"""Every module a stage can run is among its DVC deps: an edit to it reruns the stage; and
no module of dlma imports itself back through others (a registry never needs its users).

The imports are read from the source (every `import dlma...` / `from dlma... import`, those
inside functions included, and the packages' `__init__` files they run), followed to their
closure from the stage's module, so a lazy import counts as a dependency too (the `human`
stage once missed the evaluate, agreement and reward code that its params' checks import)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def module_file(name: str) -> Path | None:
    path = REPO / Path(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None  # a name imported from a module (a function), or not ours


def _runtime_nodes(tree: ast.AST):
    """Every node, except those under `if TYPE_CHECKING:` (imports for annotations never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)


def project_imports(path: Path) -> set[str]:
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.split(".")[0] in ("dlma", "stages")}


def import_closure(start: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in project_imports(path):
            parts = name.split(".")
            for end in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                found = module_file(".".join(parts[:end]))
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_every_module_a_stage_imports_is_a_dep_of_it():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    checked = 0
    for name, stage in stages.items():
        stage = stage.get("do") or stage  # a foreach stage: its template
        module = re.search(r"\b(stages\.\w+)", stage["cmd"])
        assert module, f"stage {name}: no stages.<module> in its command"
        deps = [dep for dep in stage.get("deps", []) if isinstance(dep, str)]
        files = {str(p.relative_to(REPO)) for p in import_closure(module_file(module.group(1)))}
        missing = sorted(f for f in files if not covered(f, deps))
        assert not missing, f"dvc.yaml stage {name}: add to its deps {missing}"
        checked += 1
    assert checked == len(stages) >= 13


def test_the_closure_follows_lazy_imports(tmp_path):
    # dlma/evaluate/params.py imports the judge registry inside __post_init__, and through
    # it the agreement and reward code: the closure must reach them.
    files = {str(p.relative_to(REPO)) for p in import_closure(REPO / "dlma" / "evaluate" / "params.py")}
    assert {"dlma/evaluate/judges/__init__.py", "dlma/reward/run.py", "dlma/__init__.py"} <= files


def test_no_import_cycles():
    """Tarjan's strongly connected components of the module import graph (lazy imports
    included): a cycle is a group of more than one module."""
    graph = {path: {found for name in project_imports(path) if (found := module_file(name)) is not None}
             for path in (REPO / "dlma").rglob("*.py")}
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    cycles = []

    def visit(node: Path) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(str(p.relative_to(REPO)) for p in group))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"
    assert len(graph) > 80  # the walk saw the package
