"""The layering of :mod:`app` (DESIGN.md section 2 and the package docstrings): ``app.core``
imports nothing else of ``app``; ``app.serving`` imports core; ``app.engine`` imports serving
and core; ``app.api`` imports engine, serving and core; only the entry points (``app.main``,
``app.cli``) import the API; no import cycle between modules; ``app`` never imports
``training``.

Imports are read from the source (every ``import`` statement, also those inside functions);
those under ``if TYPE_CHECKING:`` are annotations only and do not count."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
LAYERS = {
    "core": {"core"},
    "serving": {"serving", "core"},
    "engine": {"engine", "serving", "core"},
    "api": {"api", "engine", "serving", "core"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(APP.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                skipped.update(id(n) for n in ast.walk(statement))
    return skipped


def _imported_names(module: str) -> set[str]:
    """Every dotted name ``module`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


@cache
def _app_imports(module: str) -> frozenset[str]:
    """The modules of ``app`` that ``module`` imports."""
    found = set()
    for name in _imported_names(module):
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name not in (module, "app"):
            found.add(name)
    return frozenset(found)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def test_app_never_imports_training() -> None:
    found = {m for m in MODULES for n in _imported_names(m) if n.split(".")[0] == "training"}
    assert not found


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) in LAYERS))
def test_a_layer_imports_only_the_layers_below(module: str) -> None:
    allowed = LAYERS[_layer(module)]
    wrong = {d for d in _app_imports(module) if _layer(d) not in allowed}
    assert not wrong, f"{module} imports {sorted(wrong)}"


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components of the import graph: all single modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for dep in _app_imports(module):
            if dep not in index:
                visit(dep)
                low[module] = min(low[module], low[dep])
            elif dep in stack:
                low[module] = min(low[module], index[dep])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert not cycles


def test_the_layers_hold_every_module_but_the_entry_points() -> None:
    top = {m for m in MODULES if _layer(m) is None}
    assert top == {"app", "app.main", "app.cli"}
