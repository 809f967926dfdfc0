"""The package's layers: no import cycle, and the core never imports a face.

Imports are read from the source with ``ast`` (those inside functions and under
``TYPE_CHECKING`` count too), as the project's before-stop check reads them:

    faces (api, cli, magics, widgets, server, sweep.magics, sweep.cli, the package itself)
      → core (runs, store, snapshot, targets, agent, protocol, the sweep engine, …)
"""

from __future__ import annotations

import ast
from pathlib import Path

import jupyter_compute

PKG = "jupyter_compute"
ROOT = Path(jupyter_compute.__file__).parent

#: The faces: what people call (the package's public face, the API, the CLI, the
#: magics, the server extension, the widgets). Everything else is core.
FACES = ("jupyter_compute", "api", "cli", "magics", "widgets", "server", "sweep.magics",
         "sweep.cli", "pipeline.magics", "pipeline.cli")

#: Import edges exempt from the cycle check. None: keep it that way.
KNOWN: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join((PKG, *path.relative_to(ROOT).with_suffix("").parts))
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` within the package (short names, no prefix)."""
    mods = modules()

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        edges = graph.setdefault(mod, set())
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                target = resolve(name) if name.startswith(PKG) else None
                if target and target not in (mod, PKG):
                    edges.add(target)
    return {_short(m): {_short(t) for t in ts} for m, ts in graph.items()}


def _short(mod: str) -> str:
    return mod[len(PKG) + 1:] if mod != PKG else PKG


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def is_face(mod: str) -> bool:
    return any(mod == face or mod.startswith(face + ".") for face in FACES)


def without_known(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in ts if (m, t) not in KNOWN} for m, ts in graph.items()}


def test_the_graph_sees_imports_inside_functions_and_type_checking() -> None:
    graph = import_graph()
    assert "magics" in graph[PKG]               # load_ipython_extension: inside a function
    assert "targets.base" in graph["runs"]      # an annotation under TYPE_CHECKING


def test_no_import_cycle() -> None:
    assert cycles(without_known(import_graph())) == []


def test_the_core_imports_no_face() -> None:
    graph = without_known(import_graph())
    core = sorted(m for m in graph if not is_face(m))
    assert {"runs", "store", "snapshot", "targets.base", "agent", "protocol",
            "sweep.controller", "sweep.handle", "sweep.config"} <= set(core)
    upward = sorted(f"{m} -> {t}" for m in core for t in graph[m] if is_face(t))
    assert upward == []
