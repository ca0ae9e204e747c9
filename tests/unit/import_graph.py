"""The product's import graph, read from the source with ``ast`` (nothing is imported).

Every import statement counts: at module level, inside a function (the lazy imports a
cycle likes to hide behind) and under ``if TYPE_CHECKING:``. Relative imports are
resolved; ``from pkg import mod`` is an import of the module ``pkg.mod`` when that is a
module, else of ``pkg``; ``importlib.import_module("literal")`` counts as an import too.
Only edges between the product's own modules are kept.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "db", "workers")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.path.relative_to(ROOT)}:{self.line})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    return {
        module_name(path): path
        for package in packages
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _imported(node: ast.AST, name: str, is_package: bool) -> Iterator[tuple[str, list[str]]]:
    """(module, names taken from it) for one node that imports something."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, []
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        yield module, [alias.name for alias in node.names]
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
        == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        yield node.args[0].value, []


def edges(known: dict[str, Path] | None = None) -> list[Edge]:
    known = modules() if known is None else known
    found: list[Edge] = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            for module, names in _imported(node, name, path.name == "__init__.py"):
                targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in known]
                if len(targets) < len(names) or not names:  # some names are not modules
                    targets.append(module)
                for target in targets:
                    if target in known and target != name:
                        found.append(Edge(name, target, path, getattr(node, "lineno", 0)))
    return found


def cycles(graph_edges: list[Edge]) -> list[tuple[list[str], list[Edge]]]:
    """Per strongly connected component with a cycle: its modules, and one shortest
    cycle through them (as its edges)."""
    graph: dict[str, list[Edge]] = {}
    for edge in graph_edges:
        graph.setdefault(edge.source, []).append(edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(start: str) -> None:  # Tarjan, iteratively (no recursion limit)
        work = [(start, iter(graph.get(start, ())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for edge in children:
                if edge.target not in index:
                    index[edge.target] = low[edge.target] = len(index)
                    stack.append(edge.target)
                    on_stack.add(edge.target)
                    work.append((edge.target, iter(graph.get(edge.target, ()))))
                    advanced = True
                    break
                if edge.target in on_stack:
                    low[node] = min(low[node], index[edge.target])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [(sorted(c), _one_cycle(graph, c)) for c in components]


def _one_cycle(graph: dict[str, list[Edge]], component: set[str]) -> list[Edge]:
    """A shortest cycle through the component's first module (breadth first)."""
    start = min(component)
    came: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for edge in graph.get(node, ()):
                if edge.target not in component:
                    continue
                if edge.target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, came[path[0].source])
                    return path
                if edge.target not in came:
                    came[edge.target] = edge
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"no cycle found in {component}")  # a component always has one
