"""The package's layers: data -> models -> methods -> engine -> protocol/reports -> CLI, imports only point down,
and no module depends on itself through others.

The import graph comes from grimp (the engine behind import-linter), which also records imports inside
functions: a lazy import is still a dependency, and the config <-> methods cycle this test was written
against was one. Two checks run on it:

* layers: every module belongs to the layer of its top-level name (``transferlab.engine.trainer`` to
  ``engine``); an import from a lower layer into a higher one, or between two modules of one layer, is
  reported with its line. A package's ``__init__`` importing modules inside that package (re-exports)
  is never reported: it is the package's own content, not a dependency on a higher layer.
* cycles: strongly connected components of the module graph (Tarjan), each reported as one concrete
  cycle with the line of every import in it. A package's ``__init__`` is a node of its own, so a
  re-export ``P -> P.x`` is an ordinary edge that closes a cycle only when something below ``P`` imports
  ``P`` back, which is a real circular import (it works only while the names happen to be defined first).
"""

from __future__ import annotations

from collections import deque

import grimp
import pytest

PACKAGE = "transferlab"
ROOT = "__init__"  # the layer name of the top package's own __init__

LAYERS: tuple[tuple[str, ...], ...] = (  # bottom to top; the names in one layer must not import each other
    ("errors", "validation"),
    ("registry",),
    ("schedules", "config"),
    ("data",),
    ("models",),
    ("losses", "analysis"),  # analysis: pure diagnostics on tensors, arrays and models
    ("methods",),
    ("engine",),
    ("experiment",),
    ("protocol", "crossval"),  # protocols: grids of runs, k-fold cross-validation
    ("reports",),
    ("chain", "crosslingual", "speech"),  # scenarios: built on the engine, the experiment and the reports
    ("demo",),
    ("cli", ROOT),
)

ANALYSIS_MAY_IMPORT = {"errors", "validation", "registry", "models", "data"}


# --- the checker -------------------------------------------------------------------------------------


def top_name(module: str, package: str) -> str:
    """The top-level name a module belongs to: ``pkg.engine.trainer`` -> ``engine``; ``pkg`` -> ``__init__``."""
    return module[len(package) + 1:].split(".")[0] if module != package else ROOT


def describe(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    """``importer -> imported`` with the line of the import (the first one, when there are several)."""
    details = sorted(graph.get_import_details(importer=importer, imported=imported),
                     key=lambda d: d["line_number"] or 0)
    where = f" (line {details[0]['line_number']}: {details[0]['line_contents']})" if details else ""
    return f"{importer} -> {imported}{where}"


def imports(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    """Every module of the graph and the modules it imports directly."""
    return {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}


def is_reexport(importer: str, imported: str) -> bool:
    """A package's ``__init__`` importing a module inside that package."""
    return imported.startswith(importer + ".")


def layer_violations(graph: grimp.ImportGraph, package: str, layers: tuple[tuple[str, ...], ...]) -> list[str]:
    """One message per module outside every layer and per import that does not point down a layer."""
    level = {name: i for i, layer in enumerate(layers) for name in layer}
    edges = imports(graph)
    problems = [f"{module} belongs to no layer ({top_name(module, package)}): add it to LAYERS"
                for module in sorted(edges) if top_name(module, package) not in level]
    for importer in sorted(edges):
        for imported in sorted(edges[importer]):
            a, b = top_name(importer, package), top_name(imported, package)
            if a == b or a not in level or b not in level or is_reexport(importer, imported):
                continue
            if level[a] < level[b]:
                problems.append(f"upward import, {a} is below {b}: {describe(graph, importer, imported)}")
            elif level[a] == level[b]:
                problems.append(f"{a} and {b} share a layer and must not import each other: "
                                f"{describe(graph, importer, imported)}")
    return problems


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of a directed graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:  # v is the root of a component: the stack down to v
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return components


def cycle_through(start: str, edges: dict[str, set[str]], members: set[str]) -> list[str]:
    """A shortest cycle ``start -> ... -> start`` inside ``members`` (breadth-first)."""
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(edges[v] & members):
            if w == start:
                path = [v]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1] + [start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is on no cycle within {sorted(members)}")


def import_cycles(graph: grimp.ImportGraph) -> list[str]:
    """One message per import cycle: ``a -> b (line ...) -> ... -> a (line ...)``."""
    edges = imports(graph)
    messages = []
    for component in strongly_connected(edges):
        if len(component) > 1 or any(v in edges[v] for v in component):
            cycle = cycle_through(min(component), edges, component)
            steps = [describe(graph, a, b) for a, b in zip(cycle, cycle[1:])]
            messages.append(f"import cycle among {len(component)} modules: " + "; ".join(steps))
    return messages


def imports_outside(graph: grimp.ImportGraph, package: str, name: str, allowed: set[str]) -> list[str]:
    """The imports of the modules of ``name`` into anything other than ``name`` itself and ``allowed``."""
    return [describe(graph, importer, imported)
            for importer, targets in sorted(imports(graph).items()) if top_name(importer, package) == name
            for imported in sorted(targets) if top_name(imported, package) not in allowed | {name}]


# --- the package ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, cache_dir=None)


def test_imports_only_point_down_the_layers(graph):
    problems = layer_violations(graph, PACKAGE, LAYERS)
    assert not problems, "\n".join(problems)


def test_no_import_cycles(graph):
    cycles = import_cycles(graph)
    assert not cycles, "\n".join(cycles)


def test_analysis_imports_nothing_above_models_and_data(graph):
    problems = imports_outside(graph, PACKAGE, "analysis", ANALYSIS_MAY_IMPORT)
    assert not problems, "analysis/ holds pure diagnostics; run-level code belongs in reports/:\n" + "\n".join(problems)


def test_validation_imports_nothing_from_the_package(graph):
    problems = imports_outside(graph, PACKAGE, "validation", set())
    assert not problems, "\n".join(problems)


# --- the checker finds what it looks for ---------------------------------------------------------------


def _synthetic() -> grimp.ImportGraph:
    """pkg with layers low < high: high.b imports low.a (fine), low.a imports high.b back at line 7 (upward,
    and a cycle); the package high re-exports high.b (fine); high.c imports its own package back (a
    cycle through the re-export); stray is in no layer."""
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.low", "pkg.low.a", "pkg.high", "pkg.high.b", "pkg.high.c", "pkg.stray"):
        graph.add_module(module)
    for importer, imported, line in (("pkg.high.b", "pkg.low.a", 1), ("pkg.low.a", "pkg.high.b", 7),
                                     ("pkg.high", "pkg.high.b", 2), ("pkg.high", "pkg.high.c", 3),
                                     ("pkg.high.c", "pkg.high", 9)):
        graph.add_import(importer=importer, imported=imported, line_number=line, line_contents=f"import {imported}")
    return graph


def test_the_checker_reports_upward_imports_cycles_and_unlayered_modules():
    graph = _synthetic()
    problems = layer_violations(graph, "pkg", (("low",), ("high",), (ROOT,)))
    assert problems == ["pkg.stray belongs to no layer (stray): add it to LAYERS",
                        "upward import, low is below high: pkg.low.a -> pkg.high.b (line 7: import pkg.high.b)"]
    cycles = import_cycles(graph)
    assert len(cycles) == 2
    assert ("pkg.high.b -> pkg.low.a (line 1: import pkg.low.a); pkg.low.a -> pkg.high.b (line 7: import pkg.high.b)"
            in cycles[0] + cycles[1])
    assert ("pkg.high -> pkg.high.c (line 3: import pkg.high.c); pkg.high.c -> pkg.high (line 9: import pkg.high)"
            in cycles[0] + cycles[1])
    assert imports_outside(graph, "pkg", "low", set()) == ["pkg.low.a -> pkg.high.b (line 7: import pkg.high.b)"]


def test_a_package_reexporting_its_modules_is_neither_upward_nor_a_cycle():
    graph = grimp.ImportGraph()
    for importer, imported in (("pkg", "pkg.top"), ("pkg", "pkg.low"), ("pkg.low", "pkg.low.a"), ("pkg.top", "pkg.low")):
        graph.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    assert layer_violations(graph, "pkg", (("low",), ("top", ROOT))) == []
    assert import_cycles(graph) == []
