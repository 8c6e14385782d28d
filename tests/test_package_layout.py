"""The package's modules import one way: no cycle, counting imports made only for type checking.

A cycle that only ``TYPE_CHECKING`` imports close still ties the modules together for the next
reader (and for mypy), and is one careless runtime import away from an import error (issue 17).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import fakeedge

PACKAGE = Path(fakeedge.__file__).parent


def import_graph(package: Path, name: str = "fakeedge") -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere: top level, functions, TYPE_CHECKING."""
    modules = {path.stem for path in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith(f"{name}."))
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1 or node.module == name or (node.level == 0 and node.module is None):
                    if node.module is None or node.module == name:  # from . import a, b
                        found.update(alias.name for alias in node.names)
                    else:  # from .a import b
                        found.add(node.module.split(".")[0])
                elif node.level == 0 and node.module is not None and node.module.startswith(f"{name}."):
                    found.add(node.module.split(".")[1])
        graph[path.stem] = {m for m in found if m in modules and m != path.stem}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that reach one another, as a path ``a -> b -> a``."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                found.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_no_import_cycle() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 30  # the whole package was read
    assert "record" in graph["edge"]  # an edge the graph must see (a runtime import)
    assert "edge" in graph["journal"]  # and one only TYPE_CHECKING makes
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in found)


def test_a_type_checking_cycle_is_found(tmp_path: Path) -> None:
    """The check itself: a cycle closed only under TYPE_CHECKING, through a function-level import."""
    (tmp_path / "a.py").write_text("from .b import B\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n")
    (tmp_path / "c.py").write_text("def f():\n    from fakeedge import a\n")
    (tmp_path / "d.py").write_text("import fakeedge.a\nfrom fakeedge.b import B\n")
    graph = import_graph(tmp_path)
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "b"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]


# the modules users import from (README, docs, the pytest plugin) and the pure ones below them
PUBLIC = [
    "fakeedge",
    "fakeedge.audit",
    "fakeedge.claims",
    "fakeedge.clock",
    "fakeedge.config",
    "fakeedge.errors",
    "fakeedge.explain",
    "fakeedge.faults",
    "fakeedge.keys",
    "fakeedge.mint",
    "fakeedge.pytest_plugin",
    "fakeedge.record",
    "fakeedge.testing",
    "fakeedge.testing_sync",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_modules_say_what_they_export(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__dict__.get("__all__")
    assert isinstance(exported, list) and len(exported) == len(set(exported)), f"{name}: __all__, each name once"
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)  # what a star import gives a user
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(exported)
    undocumented = [
        n
        for n in exported
        if (inspect.isfunction(obj := getattr(module, n)) or inspect.isclass(obj))
        and obj.__module__ == name
        and not (obj.__doc__ or "").strip()
    ]
    assert not undocumented, f"{name}: public API without a docstring: {undocumented}"
