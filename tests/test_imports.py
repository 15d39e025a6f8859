"""The import graph of the harness, read statically (`ast`: every `import` and `from … import`,
function-level ones included): no module imports itself back through others, the core never reaches up
into the runtime or the reports, and methods and suites use the harness through bench.api."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"bench": ROOT / "bench", "bench.methods": ROOT / "methods", "bench.tasks": ROOT / "tasks"}

# the layers are the sub-packages of bench/ (README, "Layout")
def layer(name: str) -> str:
    return name.split(".")[1] if name.count(".") >= 1 else name


# What a suite of this repository may use beyond bench.api: the Evaluator's shared device cache and the
# reference models a build's quality bars score (suites outside the repository never need them).
SUITE_INTERNALS = {"bench.core.evaluator", "bench.core.registry", "bench.core.front"}


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
    assert "bench.reports.tables" in graph["bench.reports.html"]
    assert "bench.runtime.config" in graph["bench.reports.reference"]          # a function-level import
    assert "bench.methods.base" in graph["bench.methods.ta_grid"] and "bench.api" in graph["bench.methods.ta_grid"]


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" ↔ ".join(sorted(c)) for c in found)


def test_the_core_never_reaches_up_into_the_runtime_or_the_reports():
    graph = import_graph()
    for m in sorted(n for n in graph if layer(n) == "core"):
        up = {n for n in reachable(graph, m) if layer(n) in ("runtime", "reports", "cli")}
        assert not up, f"{m} reaches {sorted(up)}"


def test_methods_and_suites_use_the_harness_through_the_stable_api():
    graph = import_graph()
    for m, targets in sorted(graph.items()):
        if layer(m) not in ("methods", "tasks") or m in ("bench.methods", "bench.tasks"):   # the declarations
            continue
        inside = {t for t in targets if layer(t) in ("core", "runtime", "reports")}
        allowed = SUITE_INTERNALS if layer(m) == "tasks" else {"bench.core.front"}
        assert inside <= allowed, f"{m} imports {sorted(inside - allowed)}: use bench.api (or add it there)"
