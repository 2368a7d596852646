"""The import structure of the project, read from the source with ``ast`` (nothing is imported).

* ``include/`` and ``plugins/ml_lifecycle/`` import each other without cycles: every ``import`` and
  ``from ... import`` counts, at module level or inside a function (a cycle that only closes when
  a function runs is still a cycle), and so does ``importlib.import_module("literal")``; imports
  under ``if TYPE_CHECKING:`` never run and do not count.
* Nothing under ``include/`` imports airflow (the same code runs in Glue and SageMaker jobs).
* Only ``plugins/ml_lifecycle/context.py`` (``resolve``) picks the AWS backend: no other module outside
  ``plugins/ml_lifecycle/aws/`` and ``tests/aws/`` imports ``ml_lifecycle.aws``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from include.lifecycle.spec import PROJECT_ROOT

# (folder, the module name of that folder): plugins/ is on sys.path, so its packages are top level
GRAPH_ROOTS = ((PROJECT_ROOT / "include", "include"), (PROJECT_ROOT / "plugins" / "ml_lifecycle", "ml_lifecycle"))
SOURCE_FOLDERS = ("include", "plugins", "dags", "tests", "bench")
AWS_PACKAGE = "ml_lifecycle.aws"
AWS_ALLOWED = ("plugins/ml_lifecycle/aws/", "tests/aws/", "plugins/ml_lifecycle/context.py")


@dataclass(frozen=True)
class Import:
    """One imported name as written: ``module`` (absolute), ``names`` (for ``from module import
    names``), the line and whether it sits under ``if TYPE_CHECKING:``."""

    module: str
    names: tuple[str, ...]
    line: int
    type_checking: bool


def _module_name(path: Path) -> str:
    """The dotted name a file is imported as (``plugins/`` is on sys.path; a package is its ``__init__``)."""
    rel = path.relative_to(PROJECT_ROOT)
    parts = list(rel.with_suffix("").parts)
    if parts[0] == "plugins":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(module: str | None, level: int, importer: str, *, is_package: bool = False) -> str:
    """The absolute module of a (possibly relative) ``from`` import in module ``importer``."""
    if level == 0:
        return module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(path: Path, importer: str | None = None) -> Iterator[Import]:
    """Every import statement of a file, at any depth, and ``importlib.import_module("...")`` calls;
    relative imports are resolved against ``importer`` (default: the file's module name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    importer = importer or _module_name(path)
    is_package = path.name == "__init__.py"

    def walk(node: ast.AST, type_checking: bool) -> Iterator[Import]:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from walk(child, True)
            for child in node.orelse:
                yield from walk(child, type_checking)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, (), node.lineno, type_checking)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, importer, is_package=is_package)
            yield Import(module, tuple(a.name for a in node.names), node.lineno, type_checking)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield Import(node.args[0].value, (), node.lineno, type_checking)
        for child in ast.iter_child_nodes(node):
            yield from walk(child, type_checking)

    yield from walk(tree, False)


def _targets(imp: Import) -> list[str]:
    """The modules an import names: ``from a import b`` is module ``a.b`` when that is a module, else ``a``."""
    if not imp.names:
        return [imp.module]
    return [f"{imp.module}.{n}" for n in imp.names if n != "*"] + [imp.module]


def _source_files(*folders: str) -> list[Path]:
    return sorted(
        p for folder in folders for p in (PROJECT_ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts
    )


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` over the modules of include/ and plugins/ml_lifecycle/.

    An import of ``a.b.c`` is an edge to ``a.b.c`` only (the packages ``a`` and ``a.b`` run first,
    but a module importing a sibling of its own package is not a cycle through that package)."""
    files = {_module_name(p): p for root, _ in GRAPH_ROOTS for p in sorted(root.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {m: {} for m in files}
    for module, path in files.items():
        for imp in imports_of(path):
            if imp.type_checking:
                continue
            candidates = _targets(imp)
            known = [c for c in candidates[:-1] if c in files]
            if not known and candidates[-1] in files:
                known = [candidates[-1]]
            for target in known:
                if target != module:
                    graph[module].setdefault(target, imp.line)
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle path (first node repeated at the end) per strongly connected component of two or
    more modules (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return [_cycle_in(graph, set(c), c[0]) for c in sorted(components)]


def _cycle_in(graph: dict[str, dict[str, int]], members: set[str], start: str) -> list[str]:
    """A shortest cycle through ``start`` inside one strongly connected component (breadth first)."""
    parent: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node]):
            if child not in members:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in a component but on no cycle")  # pragma: no cover


def _describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:], strict=False)]
    return " -> ".join(cycle) + "\n      " + "\n      ".join(steps)


# --------------------------------------------------------------------------------------------
# the rules
# --------------------------------------------------------------------------------------------
def test_include_and_plugins_have_no_import_cycle() -> None:
    graph = import_graph()
    assert "include.lifecycle.spec" in graph and "ml_lifecycle.backend" in graph  # the graph saw both trees
    cycles = find_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(f"  {_describe(graph, c)}" for c in cycles)


def test_nothing_under_include_imports_airflow() -> None:
    found = [
        f"{p.relative_to(PROJECT_ROOT)}:{imp.line} imports {imp.module}"
        for p in _source_files("include")
        for imp in imports_of(p)
        if imp.module == "airflow" or imp.module.startswith("airflow.")
    ]
    assert not found, "include/ must not import airflow:\n" + "\n".join(found)


def test_only_the_backend_imports_the_aws_package() -> None:
    found = []
    for p in _source_files(*SOURCE_FOLDERS):
        rel = p.relative_to(PROJECT_ROOT).as_posix()
        if rel.startswith(AWS_ALLOWED):
            continue
        for imp in imports_of(p):
            if any(t == AWS_PACKAGE or t.startswith(AWS_PACKAGE + ".") for t in _targets(imp)):
                found.append(f"{rel}:{imp.line} imports {imp.module}{' ' + ', '.join(imp.names) if imp.names else ''}")
    assert not found, f"only {AWS_ALLOWED[-1]} may import {AWS_PACKAGE}:\n" + "\n".join(found)


# --------------------------------------------------------------------------------------------
# the reader itself
# --------------------------------------------------------------------------------------------
def test_the_reader_counts_function_level_imports_and_skips_type_checking(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "if TYPE_CHECKING:\n"
        "    from include.lifecycle.features import FeatureColumns\n"
        "else:\n"
        "    import json\n"
        "def f():\n"
        "    from . import preprocess\n"
        "    from .evaluate_data import profile\n"
        "    return importlib.import_module('include.lifecycle.bundle')\n"
    )
    path = tmp_path / "x.py"
    path.write_text(source)
    found = {(i.module, i.names, i.type_checking) for i in imports_of(path, "include.lifecycle.x")}
    assert ("include.lifecycle.features", ("FeatureColumns",), True) in found
    assert ("json", (), False) in found
    assert ("include.lifecycle", ("preprocess",), False) in found
    assert ("include.lifecycle.evaluate_data", ("profile",), False) in found
    assert ("include.lifecycle.bundle", (), False) in found
    assert _absolute("spec", 2, "include.lifecycle.evaluate_data.gate") == "include.lifecycle.spec"
    assert _absolute("gate", 1, "include.lifecycle.evaluate_data", is_package=True) == (
        "include.lifecycle.evaluate_data.gate"
    )
    assert _module_name(PROJECT_ROOT / "plugins" / "ml_lifecycle" / "aws" / "__init__.py") == "ml_lifecycle.aws"


def test_find_cycles_reports_the_path() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}, "e": {"e": 5}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert "a (line 1) -> b" in _describe(graph, ["a", "b", "c", "a"])
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []
