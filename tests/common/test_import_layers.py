"""The package layers (docs/architecture.md): imports go one way only, and no module imports
itself back through others. Read from the source with ``ast``, so imports inside functions
(the lazily imported frameworks' shells) count as much as those at the top."""
import ast
from pathlib import Path
from typing import Dict, Set

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> the project packages it may import (besides itself)
ALLOWED: Dict[str, Set[str]] = {
    "core": set(),
    "parallel": {"core"},
    "models": {"core", "parallel"},
    "backends": {"core", "parallel"},
    "launch": {"core"},
    "training": {"core", "parallel", "models", "backends", "launch"},
    "scripts": {"core", "parallel", "models", "backends", "launch", "training"},
}
PROJECT = set(ALLOWED) | {"tests"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> Set[str]:
    """Every project name ``path`` imports: ``import a.b`` gives a.b, ``from a.b import c``
    gives a.b and a.b.c (c may be a module or a name in a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PROJECT)
    return found


SOURCES = {path: module_name(path) for package in PROJECT for path in (ROOT / package).rglob("*.py")}
GRAPH = {name: project_imports(path) for path, name in SOURCES.items()}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_go_one_way(package):
    wrong = sorted(f"{module} imports {target}" for module, targets in GRAPH.items()
                   if module.split(".")[0] == package for target in targets
                   if target.split(".")[0] not in ALLOWED[package] | {package})
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package]) or 'nothing of ours'}: " + "; ".join(wrong)


def test_no_module_imports_itself_back():
    """Depth-first search for a cycle in the module graph (edges to modules only)."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path = []

    def visit(module: str):
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if target not in GRAPH or target == module:
                continue
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)
