"""The package's import graph has no cycles.

The graph is read from the source, not from a running interpreter: every ``import`` and
``from ... import`` that runs when a module is imported (module level, including ``if``/``try``
blocks and class bodies) is an edge; imports inside functions and under ``if TYPE_CHECKING:``
are not. ``from package import name`` is an edge to ``package.name`` when that is a module and
to ``package`` otherwise; importing ``a.b.c`` is an edge to ``a.b.c`` alone (Python imports
the parent packages first, whatever they import).
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import REPO


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package in ``package_dir``."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_time_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when a module with this body is imported."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue  # runs when called, not when imported
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from import_time_imports(node.orelse)
        else:  # class bodies and the blocks of if, try, with, for, while, match
            for field in ("body", "orelse", "finalbody"):
                yield from import_time_imports(getattr(node, field, []))
            for clause in [*getattr(node, "handlers", []), *getattr(node, "cases", [])]:
                yield from import_time_imports(clause.body)


def imported_modules(
    node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, known: set[str]
) -> set[str]:
    """The modules of ``known`` that ``node``, in module ``importer``, makes Python import."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & known
    if node.level:  # relative: resolved against the importer's package
        package = importer.split(".")
        if not is_package:
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    found = set()
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        found.add(submodule if submodule in known else base)
    return found & known


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports at import time."""
    modules = module_names(package_dir)
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in import_time_imports(tree.body):
            edges |= imported_modules(node, name, is_package, known)
        graph[name] = edges - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle, as [a, b, ..., a], through each strongly connected part of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    parts: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.add(w)
                if w == v:
                    break
            if len(part) > 1:
                parts.append(part)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_within(graph, part) for part in parts]


def _cycle_within(graph: dict[str, set[str]], part: set[str]) -> list[str]:
    """The shortest cycle through the alphabetically first module of ``part``."""
    start = min(part)
    came_from = {start: start}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & part):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in came_from:
                    came_from[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle in strongly connected part {sorted(part)}")


def test_rtsal_has_no_import_cycles():
    graph = import_graph(REPO / "rtsal")
    assert "rtsal.registry.plugins" in graph["rtsal.registry.blackbox"]  # the graph is really read
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_find_cycles_by_hand():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_import_graph_of_a_planted_package(tmp_path):
    """Module-level imports count (also in ``try`` and class bodies, relative or absolute);
    imports in functions and under ``if TYPE_CHECKING:`` do not."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "from pkg.a import thing\n",
        "a.py": """
            from typing import TYPE_CHECKING
            from . import b
            if TYPE_CHECKING:
                from pkg import c
            else:
                import os
            def later():
                from pkg import d
            thing = 1
        """,
        "b.py": "try:\n    from .sub.e import x\nexcept ImportError:\n    pass\n",
        "c.py": "",
        "d.py": "",
        "sub/__init__.py": "from .. import d\n",
        "sub/e.py": "class K:\n    from pkg.sub import y\nx = 1\n",
    }
    for name, source in sources.items():
        (pkg / name).write_text(textwrap.dedent(source))
    graph = import_graph(pkg)
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.e"},
        "pkg.c": set(),
        "pkg.d": set(),
        "pkg.sub": {"pkg.d"},
        "pkg.sub.e": {"pkg.sub"},
    }
    assert find_cycles(graph) == []
    (pkg / "c.py").write_text("from pkg import thing\n")
    (pkg / "a.py").write_text("from pkg import c\nthing = 1\n")
    assert find_cycles(import_graph(pkg)) == [["pkg", "pkg.a", "pkg.c", "pkg"]]


# The engine: the paper's method and what training it needs (model, Φ, objective, checkpoints,
# training state, distribution, keyed randomness): every module of rtsal.engine. It must stay
# free of image files, the command line, terminal UI and export libraries, so it can run
# anywhere a tensor can, and it builds on nothing of rtsal but the foundation below.
ENGINE_PACKAGE = "rtsal.engine"
FOUNDATION = {"rtsal", "rtsal.errors", "rtsal.device"}  # the package root, errors, devices


def engine_modules(modules) -> set[str]:
    return {m for m in modules if m == ENGINE_PACKAGE or m.startswith(ENGINE_PACKAGE + ".")}


NOT_IN_ENGINE = {"PIL", "typer", "click", "rich", "onnx", "onnxruntime", "av", "skimage", "cv2"}


def third_party_imports(path: Path, package: str = "rtsal") -> set[str]:
    """Top-level names of the modules outside ``package`` a file imports at import time."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in import_time_imports(tree.body):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - {package}


def reachable(graph: dict[str, set[str]], start: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())
    return seen


def test_the_engine_imports_no_files_cli_ui_or_export_libraries():
    graph = import_graph(REPO / "rtsal")
    modules = module_names(REPO / "rtsal")
    engine = engine_modules(modules)
    assert {"rtsal.engine.model", "rtsal.engine.objective", "rtsal.engine.removal"} <= engine
    closure = reachable(graph, engine)
    offenders = {
        m: sorted(third_party_imports(modules[m]) & NOT_IN_ENGINE)
        for m in sorted(closure)
        if third_party_imports(modules[m]) & NOT_IN_ENGINE
    }
    assert not offenders, f"the engine reaches {offenders} (through {sorted(closure - engine)})"


def test_the_engine_rule_catches_a_planted_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text("import torch\nfrom pkg import helper\n")
    (pkg / "helper.py").write_text("from PIL import Image\n")
    graph = import_graph(pkg)
    closure = reachable(graph, {"pkg.core"})
    assert closure == {"pkg.core", "pkg.helper"}
    assert third_party_imports(pkg / "helper.py", "pkg") & NOT_IN_ENGINE == {"PIL"}
    assert third_party_imports(pkg / "core.py", "pkg") == {"torch"}


def package_of(module: str) -> str:
    """``rtsal.engine.model`` -> ``rtsal.engine``; top-level modules stand for themselves."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        for b in targets:
            if package_of(a) != package_of(b):
                out.setdefault(package_of(a), set()).add(package_of(b))
    return out


def test_packages_have_no_import_cycles():
    """engine and registry at the bottom, methods/metrics/data/inference/training above them,
    the command line on top: no package imports one that imports it back."""
    graph = package_graph(import_graph(REPO / "rtsal"))
    assert "rtsal.engine" in graph["rtsal.training"]  # the graph is really read
    cycles = find_cycles(graph)
    assert not cycles, "package cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_engine_builds_on_nothing_but_the_foundation():
    graph = import_graph(REPO / "rtsal")
    engine = engine_modules(graph)
    outside = {
        m: sorted(targets - engine - FOUNDATION)
        for m, targets in sorted(graph.items())
        if m in engine and targets - engine - FOUNDATION
    }
    assert not outside, f"engine modules import other rtsal packages: {outside}"


def test_package_graph_by_hand():
    graph = {
        "rtsal.cli.train": {"rtsal.training.trainer"},
        "rtsal.training.trainer": {"rtsal.engine.model", "rtsal.training.config"},
        "rtsal.engine.model": {"rtsal.errors"},
        "rtsal.engine.checkpoint": {"rtsal.engine.model"},
    }
    assert package_graph(graph) == {
        "rtsal.cli": {"rtsal.training"},
        "rtsal.training": {"rtsal.engine"},
        "rtsal.engine": {"rtsal.errors"},
    }
    graph["rtsal.engine.checkpoint"].add("rtsal.training.config")  # engine -> training -> engine
    assert find_cycles(package_graph(graph)) == [["rtsal.engine", "rtsal.training", "rtsal.engine"]]
