"""The package's import graph: no cycles, each package on the layers below it, the engine on the
foundation alone (docs/architecture.md).

The graph is read from the source, not from a running interpreter: every ``import`` and
``from ... import`` is an edge, wherever it stands (module level, ``if``/``try`` blocks, class
bodies, and inside functions: an import put off until a function runs, for start-up speed,
obeys the same layering as one at the top of the file); only those under
``if TYPE_CHECKING:`` are not, since they never run. ``from package import name`` is an edge
to ``package.name`` when that is a module and to ``package`` otherwise; importing ``a.b.c`` is
an edge to ``a.b.c`` alone (Python imports the parent packages first, whatever they import).
Names a package root hands out on first use (``importlib.import_module`` in its
``__getattr__``) are not edges: the root does not import them, its users do.
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


def imports_in(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of a module with this body, at any depth (functions, methods,
    classes, blocks), except under ``if TYPE_CHECKING:`` (its ``else`` counts)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from imports_in(node.orelse)
        else:  # functions, class bodies and the blocks of if, try, with, for, while, match
            for field in ("body", "orelse", "finalbody"):
                yield from imports_in(getattr(node, field, []))
            for clause in [*getattr(node, "handlers", []), *getattr(node, "cases", [])]:
                yield from imports_in(clause.body)


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
    """Module -> the modules of the same package it imports (anywhere in its file)."""
    modules = module_names(package_dir)
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in imports_in(tree.body):
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


def rtsal_graph() -> dict[str, set[str]]:
    """rtsal's import graph: every import, at module level or inside a function."""
    return import_graph(REPO / "rtsal")


def test_rtsal_has_no_import_cycles():
    graph = rtsal_graph()
    assert "rtsal.registry.plugins" in graph["rtsal.registry.blackbox"]  # the graph is really read
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_find_cycles_by_hand():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_import_graph_of_a_planted_package(tmp_path):
    """Imports count wherever they stand (module level, ``try`` blocks, class bodies,
    functions and methods; relative or absolute), except under ``if TYPE_CHECKING:``."""
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


def test_a_planted_function_level_import_is_caught(tmp_path):
    """An import inside a function (or a method, or a nested function) closes a cycle as one
    at the top of the file would; the same import under ``if TYPE_CHECKING:`` does not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    return 1\n")
    (pkg / "high.py").write_text("from pkg.low import f\n")
    assert find_cycles(import_graph(pkg)) == []
    later = """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from pkg import high
        class K:
            def method(self):
                def inner():
                    from pkg.high import g
                return inner
        def f():
            return 1
    """
    (pkg / "low.py").write_text(textwrap.dedent(later))
    assert import_graph(pkg)["pkg.low"] == {"pkg.high"}
    assert find_cycles(import_graph(pkg)) == [["pkg.high", "pkg.low", "pkg.high"]]
    (pkg / "low.py").write_text(textwrap.dedent(later.replace("from pkg.high import g", "pass")))
    assert find_cycles(import_graph(pkg)) == []  # the TYPE_CHECKING import alone is no edge


# The engine: the paper's method and what training it needs (model, Φ, objective, checkpoints,
# training state, distribution, keyed randomness): every module of rtsal.engine. It must stay
# free of image files, the command line, terminal UI and export libraries, so it can run
# anywhere a tensor can, and it builds on nothing of rtsal but the foundation below.
ENGINE_PACKAGE = "rtsal.engine"
# the package root, errors, devices, the allocator, atomic files, boxes: each imports nothing of
# rtsal but the others
FOUNDATION = {
    "rtsal",
    "rtsal.errors",
    "rtsal.device",
    "rtsal.allocator",
    "rtsal.files",
    "rtsal.boxes",
}


def engine_modules(modules) -> set[str]:
    return {m for m in modules if m == ENGINE_PACKAGE or m.startswith(ENGINE_PACKAGE + ".")}


NOT_IN_ENGINE = {"PIL", "typer", "click", "rich", "onnx", "onnxruntime", "av", "skimage", "cv2"}


def third_party_imports(path: Path, package: str = "rtsal") -> set[str]:
    """Top-level names of the modules outside ``package`` a file imports (anywhere in it)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in imports_in(tree.body):
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
    graph = rtsal_graph()
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
    # the same reach through imports put off until a function runs
    (pkg / "core.py").write_text("import torch\ndef f():\n    from pkg import helper\n")
    (pkg / "helper.py").write_text("def g():\n    from PIL import Image\n")
    assert reachable(import_graph(pkg), {"pkg.core"}) == {"pkg.core", "pkg.helper"}
    assert third_party_imports(pkg / "helper.py", "pkg") & NOT_IN_ENGINE == {"PIL"}


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
    """No package imports one that imports it back (implied by the layers below, and said on
    its own: a cycle is named as one)."""
    graph = package_graph(rtsal_graph())
    assert "rtsal.engine" in graph["rtsal.training"]  # the graph is really read
    cycles = find_cycles(graph)
    assert not cycles, "package cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_engine_builds_on_nothing_but_the_foundation():
    graph = rtsal_graph()
    engine = engine_modules(graph)
    outside = {
        m: sorted(targets - engine - FOUNDATION)
        for m, targets in sorted(graph.items())
        if m in engine and targets - engine - FOUNDATION
    }
    assert not outside, f"engine modules import other rtsal packages: {outside}"


def test_the_foundation_imports_nothing_above_it():
    graph = rtsal_graph()
    assert set(graph) >= FOUNDATION
    outside = {
        m: sorted(graph[m] - FOUNDATION) for m in sorted(FOUNDATION) if graph[m] > FOUNDATION
    }
    assert not outside, f"foundation modules import other rtsal packages: {outside}"


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


# The layers, bottom first (docs/architecture.md): a package imports packages of the layers
# below its own and no other (the foundation's modules also import each other). Packages of one
# layer stay independent of each other. A new package is placed here.
LAYERS: list[set[str]] = [
    FOUNDATION,
    {"rtsal.engine"},
    {"rtsal.registry"},
    {"rtsal.data"},
    {"rtsal.methods", "rtsal.metrics"},
    {"rtsal.inference"},
    {"rtsal.training", "rtsal.tools"},
    {"rtsal.runs", "rtsal.integrations", "rtsal.serve"},
    {"rtsal.cli"},
    {"rtsal.__main__"},  # python -m rtsal
]


def layer_violations(packages: dict[str, set[str]], layers: list[set[str]]) -> list[str]:
    """``a -> b`` for each import of package ``a`` that is not of a layer below ``a``'s."""
    level = {p: i for i, layer in enumerate(layers) for p in layer}
    return [
        f"{a} -> {b}"
        for a, targets in sorted(packages.items())
        for b in sorted(targets)
        if b != a and level[b] >= level[a] and not (level[a] == level[b] == 0)
    ]


def test_every_package_has_a_layer():
    packages = {package_of(m) for m in module_names(REPO / "rtsal")}
    placed = set().union(*LAYERS)
    assert packages <= placed, f"place in LAYERS: {sorted(packages - placed)}"
    assert placed <= packages, f"not packages of rtsal: {sorted(placed - packages)}"


def test_packages_import_only_the_layers_below():
    violations = layer_violations(package_graph(rtsal_graph()), LAYERS)
    assert not violations, "imports against the layers:\n" + "\n".join(violations)


def test_layer_rule_by_hand():
    layers = [{"f", "g"}, {"low"}, {"mid", "peer"}, {"top"}]
    fine = {"g": {"f"}, "low": {"f"}, "mid": {"low", "g"}, "top": {"mid", "peer", "f"}}
    assert layer_violations(fine, layers) == []
    wrong = {"low": {"mid"}, "mid": {"peer"}, "peer": {"peer"}, "top": {"top"}}
    assert layer_violations(wrong, layers) == ["low -> mid", "mid -> peer"]
