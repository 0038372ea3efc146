"""The package has no import circle: the module-level import graph is acyclic, the learner spec
imports no other metanlp module (what it builds is built beside the model and the algorithm), and
any module can be imported first."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import metanlp

PACKAGE = Path(metanlp.__file__).parent


def _module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path], top_level: bool) -> set[str]:
    """The metanlp modules ``name`` imports: at module level only, or anywhere (lazy imports in
    functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level else list(ast.walk(tree))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_module_level_imports_have_no_circle():
    modules = _module_names()
    graph = {n: _imports(n, p, modules, top_level=True) for n, p in modules.items()}
    assert _cycles(graph) == []


def test_the_spec_and_the_model_are_on_no_circle_even_through_lazy_imports():
    modules = _module_names()
    assert _imports("metanlp.spec", modules["metanlp.spec"], modules, top_level=False) == set()
    graph = {n: _imports(n, p, modules, top_level=False) for n, p in modules.items()}
    on_circles = {m for component in _cycles(graph) for m in component}
    assert not on_circles & {"metanlp.spec", "metanlp.models", "metanlp.serialization"}


@pytest.mark.parametrize(
    "first", ["metanlp.spec", "metanlp.models", "metanlp.meta.params", "metanlp.training.config"]
)
def test_any_module_can_be_imported_first(first):
    code = (
        f"import {first}\n"
        "import metanlp.api, metanlp.training.trainer, metanlp.hub\n"
        "from metanlp.models import build_model\n"
        "from metanlp.meta.registry import algorithm_from_spec\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
