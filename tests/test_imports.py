"""The import graph of the harness, read statically (`ast`: every `import` and `from … import`,
function-level ones included): no module imports itself back through others, and the core never
reaches up into the config or the reports."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"bench": ROOT / "bench", "bench.methods": ROOT / "methods", "bench.tasks": ROOT / "tasks"}

# Cycles being cut by another change (run ↔ parallel, tiny_clip ↔ tiny_clip_build). Empty this set as
# each is cut; never add to it: a new cycle is a bug.
KNOWN_CYCLES_BEING_CUT: set[frozenset[str]] = set()

REPORTS = {"bench.reports.tables", "bench.reports.reference", "bench.reports.bootstrap", "bench.reports.report", "bench.reports.html", "bench.reports.plots",
           "bench.reports.plots_many", "bench.reports.eaf", "bench.reports.figstyle", "bench.reports.leaderboard"}
CORE = {"bench.core.indicators", "bench.core.hypervolume", "bench.core.front", "bench.core.record", "bench.core.registry", "bench.core.merge",
        "bench.core.rays"}


def modules() -> dict[str, Path]:
    """Every module of the three packages under its import name (methods/ is bench.methods …)."""
    out = {}
    for pkg, directory in PACKAGES.items():
        for path in directory.rglob("*.py"):
            parts = [p for p in path.relative_to(directory).with_suffix("").parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module → the harness modules it imports (a name imported from a package is the module it
    names where there is one, else the package)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == "bench"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:                                   # relative: from the module's package
                    up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                if base.split(".")[0] == "bench":
                    targets |= {resolve(f"{base}.{a.name}") if f"{base}.{a.name}" in mods else resolve(base)
                                for a in node.names}
        graph[name] = targets - {None, name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_the_graph_is_read():
    graph = import_graph()
    assert {"bench.reports.tables", "bench.methods.ta_grid", "bench.tasks.toy", "bench.methods.pwe_moe.trainer"} <= set(graph)
    assert "bench.reports.tables" in graph["bench.reports.html"] and "bench.runtime.config" in graph["bench.reports.reference"]   # function-level
    assert "bench.methods.base" in graph["bench.methods.ta_grid"]


def test_no_import_cycle():
    found = set(cycles(import_graph()))
    assert found - KNOWN_CYCLES_BEING_CUT == set(), "import cycles: " + "; ".join(
        " ↔ ".join(sorted(c)) for c in found - KNOWN_CYCLES_BEING_CUT)
    cut = KNOWN_CYCLES_BEING_CUT - found
    assert not cut, f"cut, so remove them from KNOWN_CYCLES_BEING_CUT: {[sorted(c) for c in cut]}"


def test_the_reports_form_no_cycle_and_the_core_never_reaches_them():
    graph = import_graph()
    assert not [c for c in cycles(graph) if c & REPORTS]
    for m in sorted(CORE):
        up = reachable(graph, m) & (REPORTS | {"bench.runtime.config", "bench.cli"})
        assert not up, f"{m} reaches {sorted(up)}"
