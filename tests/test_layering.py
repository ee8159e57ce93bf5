"""The package is layered: a subpackage imports only itself and the layers below it.

core < tracing < engine < deploy < analysis < pruning < callbacks < app. Imports inside functions count
too; only the top-level ``slim_callbacks/__init__.py`` (the public API) and
``__main__.py`` may import from every layer.
"""
import ast
import pathlib

import pytest

import slim_callbacks

LAYERS = ("core", "tracing", "engine", "deploy", "analysis", "pruning", "callbacks", "app")
PACKAGE = pathlib.Path(slim_callbacks.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py")
                 if p.parent != PACKAGE and p.relative_to(PACKAGE).parts[0] in LAYERS)


def imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def layer_of(module_name):
    parts = module_name.split(".")
    if parts[0] != "slim_callbacks":
        return None
    if len(parts) == 1:
        return len(LAYERS)          # the public API: above every layer
    return LAYERS.index(parts[1])


def test_every_module_belongs_to_a_layer():
    top_level = {p.name for p in PACKAGE.glob("*.py")}
    assert top_level == {"__init__.py", "__main__.py"}
    assert {p.relative_to(PACKAGE).parts[0] for p in MODULES} == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_layer_never_imports_a_higher_one(path):
    own = LAYERS.index(path.relative_to(PACKAGE).parts[0])
    higher = [name for name in imported_modules(path)
              if layer_of(name) is not None and layer_of(name) > own]
    assert not higher, f"{path.relative_to(PACKAGE)} ({LAYERS[own]}) imports {higher}"


def test_schedules_and_core_errors_import_no_paddle():
    """Schedules are plain data (they pickle and round-trip through YAML)."""
    for name in ("pruning/schedules.py", "pruning/schedule_curves.py",
                 "pruning/schedule_factory.py", "core/errors.py", "core/checks.py"):
        imported = set(imported_modules(PACKAGE / name))
        assert not any(n.split(".")[0] == "paddle" for n in imported), name
