"""The subpackages of ``amcore`` form layers, and every import points left: a module imports only from its own layer
or from layers before it (foundations < data < paths < models < training < evaluation < top level).

Pure ``ast``: reads the sources, imports nothing (no torch), so it runs in a blink; one test starts a Python to see
what the workflow's own imports load.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
from conftest import ROOT

PACKAGE = ROOT / "amcore"
FOUNDATIONS = ("amcore.errors", "amcore.atomic", "amcore.choices", "amcore.metrics", "amcore.version")
LAYERS = ("foundations", "data", "paths", "models", "training", "evaluation", "top")


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The layer of an amcore module (or of a name inside it); the package itself is the top level."""
    for foundation in FOUNDATIONS:
        if module == foundation or module.startswith(foundation + "."):
            return 0
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS[1:-1]:
        return LAYERS.index(parts[1])
    return len(LAYERS) - 1


def imported(path) -> list[tuple[int, str]]:
    """Every amcore module the file imports (top level and inside functions), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "amcore"]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; use absolute amcore imports"
            if node.module == "amcore":  # `from amcore import x`: x is a module (or a public name) of amcore
                found += [(node.lineno, f"amcore.{alias.name}") for alias in node.names]
            elif node.module and node.module.split(".")[0] == "amcore":
                found.append((node.lineno, node.module))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    assert SOURCES
    names = {module_name(path) for path in SOURCES}
    for package in LAYERS[1:-1]:
        assert f"amcore.{package}" in names, f"amcore/{package}/__init__.py is missing"
    assert set(FOUNDATIONS) <= names
    flat = {name for name in names if name.count(".") == 1 and name not in FOUNDATIONS}
    flat -= {f"amcore.{package}" for package in LAYERS[1:-1]}
    assert flat <= {"amcore.tracking", "amcore.export", "amcore.cli", "amcore.__main__"}, flat


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: module_name(path))
def test_imports_point_left(path):
    module = module_name(path)
    own = layer(module)
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {target} ({LAYERS[layer(target)]}) from {LAYERS[own]}"
        for line, target in imported(path)
        if layer(target) > own
    ]
    assert not wrong, "\n".join(wrong)


def test_foundations_import_nothing_but_the_errors():
    """``errors`` is the floor: the other foundations may raise its errors and import nothing else of amcore."""
    for name in FOUNDATIONS:
        path = ROOT / (name.replace(".", "/") + ".py")
        allowed = set() if name == "amcore.errors" else {"amcore.errors"}
        assert {target for _, target in imported(path)} <= allowed, f"{name} imports {imported(path)}"


HEAVY = ("torch", "dask", "xarray", "zarr", "ot", "mlflow", "sklearn", "matplotlib")


def test_the_workflow_checks_a_config_without_loading_torch():
    """The Snakefile checks every model's settings before any job, on every ``snakemake`` call (a dry run, each
    cluster job's own): what it imports of amcore loads none of the heavy libraries (torch alone cost 2.5 s a call)."""
    rules = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    # Snakemake's grammar is not Python's: its import lines are read as text
    found = (re.findall(r"^\s*(?:from|import) (amcore[\w.]*)", path.read_text(), re.MULTILINE) for path in rules)
    modules = sorted({name for names in found for name in names})
    assert "amcore.training.config" in modules and "amcore.choices" in modules, modules
    code = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    heavy = [name for name in HEAVY if f"'{name}'" in loaded.stdout]
    assert not heavy, f"the workflow's imports {modules} load {heavy}"
