"""The package's import graph, read from the source with `ast`: no circle, and the command line (`rtcstack.cli`)
has no importer in the library.

Every ``import`` / ``from ... import`` counts, wherever it stands (inside a function, under ``TYPE_CHECKING``): a
circle that only a lazy import keeps from breaking is still a circle for a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import rtcstack

PACKAGE = Path(rtcstack.__file__).parent
CLI = "rtcstack.cli"
ENTRY_POINT = "rtcstack.__main__"
"""``python -m rtcstack`` and the console script: the one module outside the command line that runs it."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: Iterable[str]) -> set[str]:
    """The rtcstack modules that the module ``name`` (source at ``path``) imports."""
    known = set(modules)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known  # `from . import _machine`
            found.update(submodules or {target})
    return {module for module in found if module in known and module != name}


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    return {name: _imports(name, path, sources) for name, path in sources.items()}


def _cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One circle in ``graph`` as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            found = visit(target, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def _in_cli(module: str) -> bool:
    return module == CLI or module.startswith(CLI + ".")


def _cli_importers(graph: Mapping[str, set[str]]) -> list[str]:
    """The modules outside the command line (and its entry point) that import from it."""
    return sorted(
        name
        for name, targets in graph.items()
        if not _in_cli(name) and name != ENTRY_POINT and any(_in_cli(target) for target in targets)
    )


def test_the_graph_is_read_from_the_source() -> None:
    graph = _graph()
    assert {"rtcstack._call", "rtcstack.cli._main", "rtcstack.cli._common", "rtcstack.testing._server"} <= set(graph)
    assert "rtcstack._machine" in graph["rtcstack._call"]
    assert graph["rtcstack.cli._main"] >= {"rtcstack.cli._common", "rtcstack.cli._watch", "rtcstack.cli._demo"}
    assert graph[ENTRY_POINT] == {CLI}
    assert "rtcstack.testing" in graph["rtcstack.cli._common"]  # imported inside a function: still counted


def test_the_import_graph_has_no_circle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, f"import circle: {' -> '.join(cycle or [])}"


def test_the_library_never_imports_the_command_line() -> None:
    importers = _cli_importers(_graph())
    assert not importers, f"modules outside {CLI} import it: {', '.join(importers)}"


def test_the_checks_find_what_they_look_for() -> None:
    """The two checks on small graphs: a circle through three modules, and a library module importing the CLI."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    graph = {"rtcstack._call": {"rtcstack.cli._views"}, CLI: {"rtcstack._call"}, ENTRY_POINT: {CLI}}
    assert _cli_importers(graph) == ["rtcstack._call"]
