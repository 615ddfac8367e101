"""The library's shape, read from its source with ast (nothing is imported or run).

* Every import points down: ``core`` at the bottom; ``data``, ``infer`` and ``eval`` side by side
  above it (none imports another of the three); ``posttrain`` above them; the command-line
  scripts, the plugins, the demo and the launchers on top (they may import anything). Inside
  ``data``: ``pipeline`` (the shared steps) <- ``readers`` <- ``converters``.
* No import cycle between the library's modules.
* No function over 80 lines in scripts/ (the library, the command-line scripts, the plugins) and app/.
"""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

LIBRARY = ROOT / "scripts" / "medswift"
LAYERS = {"core": 0, "data": 1, "infer": 1, "eval": 1, "posttrain": 2}
# inside data: the pipeline steps at the bottom, the readers above them, the task converters on top
DATA_LAYERS = {"pipeline": 0, "readers": 1, "converters": 2}
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """The library modules a file imports, at any depth (function-level imports count): for
    ``from medswift.eval import rewards`` the module medswift.posttrain.rewards, else the package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name == "medswift" or name.startswith("medswift.")}
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


GRAPH = {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def test_the_layers_cover_the_library():
    assert {layer(name) for name in MODULES} - {None} == set(LAYERS), "a package outside the layers"


def test_every_import_points_down():
    wrong = []
    for name, targets in GRAPH.items():
        here = layer(name)
        for target in targets:
            there = layer(target)
            if here is None or there is None or there == here:
                continue  # the package's own __init__, or inside one package
            if LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports that point up or sideways: " + ", ".join(sorted(wrong))


def test_data_readers_and_converters_stand_on_the_pipeline():
    data_kind = {name: name.split(".")[2] for name in MODULES if name.count(".") >= 3 and layer(name) == "data"}
    assert set(data_kind.values()) == set(DATA_LAYERS), "a data module outside readers/, converters/, pipeline/"
    wrong = [f"{name} -> {target}" for name, targets in GRAPH.items() if name in data_kind
             for target in targets if target in data_kind and DATA_LAYERS[data_kind[target]] > DATA_LAYERS[data_kind[name]]]
    assert not wrong, "data imports that point up: " + ", ".join(sorted(wrong))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def long_functions(paths, root: Path = ROOT) -> list[str]:
    out = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(root)}:{node.name} {length}")
    return out


def test_long_function_finder_counts_lines(tmp_path):
    body = "\n".join(f"    x{k} = {k}" for k in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n")
    (tmp_path / "short.py").write_text(f"def short():\n{body[:body.rfind(chr(10))]}\n")
    found = long_functions([tmp_path / "long.py", tmp_path / "short.py"], root=tmp_path)
    assert found == [f"long.py:long {MAX_FUNCTION_LINES + 1}"]


def test_no_function_over_80_lines():
    paths = sorted((ROOT / "scripts").rglob("*.py")) + sorted((ROOT / "app").rglob("*.py"))
    assert long_functions(paths) == []
