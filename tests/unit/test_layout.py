"""The code's layout rules, read from the source: no module over 500 lines and no
function over 60 outside the tests; ``model`` never imports ``actors``; no import cycle
among the project's modules (imports at module level, those that run at import time)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("actors", "model", "scripts")
PACKAGES = ("actors", "model")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def too_long(path: Path) -> list[str]:
    text = path.read_text()
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{where}: {lines} lines")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    return found


def _imported(node: ast.Import | ast.ImportFrom, package: str | None) -> set[str]:
    """``a.b`` for ``import a.b``, ``a.b.c`` for ``from a.b import c`` (a module, or a
    name in the module ``a.b``); relative imports resolved against ``package``."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level and package is not None:
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    return {f"{base}.{alias.name}" for alias in node.names}


def _package(path: Path) -> str | None:
    if not path.is_relative_to(ROOT):
        return None
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def imports_at_import_time(path: Path) -> set[str]:
    """What ``path`` imports from the project at module level (not in functions, not
    under ``if TYPE_CHECKING``): the names :func:`_imported` gives."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names.update(_imported(node, _package(path)))
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody)

    visit(tree.body)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def every_import(path: Path) -> set[str]:
    """What ``path`` imports from the project anywhere: module level, inside functions,
    under ``if TYPE_CHECKING``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found |= _imported(node, _package(path))
    return {n for n in found if n.split(".")[0] in PACKAGES}


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in sources(*PACKAGES)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        # "from a.b import c" names a.b.c: a module when there is one, else a name in a.b.
        graph[name] = {
            target if target in modules else target.rsplit(".", 1)[0]
            for target in imports_at_import_time(path)
        } & set(modules)
        graph[name].discard(name)
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := walk(start)):
            return found
    return None


def test_no_module_over_500_lines_and_no_function_over_60_outside_the_tests() -> None:
    found = [line for path in sources(*CHECKED) for line in too_long(path)]
    assert found == []


def test_model_never_imports_actors() -> None:
    """Not even inside a function or for type checking only: ``model`` stands alone."""
    offenders = {
        module_name(path): sorted(n for n in every_import(path) if n.split(".")[0] == "actors")
        for path in sources("model")
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_no_import_cycle_among_the_projects_modules() -> None:
    assert cycle(import_graph()) is None


def test_the_rules_catch_what_they_name(tmp_path: Path) -> None:
    """The checks themselves, on made-up input: a cycle is found, a long function and a
    long module are, relative imports resolve, an import inside a function counts for
    ``model`` never importing ``actors`` and not for the import-time graph."""
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * 60 + "\n" * 440)
    assert too_long(long) == [f"{long}:1 f: 61 lines", f"{long}: 501 lines"][::-1]
    long.write_text("def f():\n" + "    x = 1\n" * 59)
    assert too_long(long) == []
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    first, second = (
        node for node in ast.parse("from .jobs import Job\nfrom .. import errors").body
    )
    assert isinstance(first, ast.ImportFrom) and isinstance(second, ast.ImportFrom)
    assert _imported(first, "actors.http.schemas") == {"actors.http.schemas.jobs.Job"}
    assert _imported(second, "actors.http.schemas") == {"actors.http.errors"}
    lazy = tmp_path / "lazy.py"
    lazy.write_text("import model.jobs\n\n\ndef f():\n    import actors.service\n")
    assert every_import(lazy) == {"model.jobs", "actors.service"}
    assert imports_at_import_time(lazy) == {"model.jobs"}
    graph = import_graph()
    assert "model.db.tables" in graph["model.db.store"]
    assert any(name.startswith("model") for name in graph["actors.service"])
