"""The walls of docs/architecture.md are checked, not hoped for: ``lint-imports`` (import-linter,
contracts in pyproject.toml) passes on this tree, and fails on a copy of it with one forbidden
import planted."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import integration_bus

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the packages under ``root`` (they shadow the installed ones)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
         "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root, env=env, capture_output=True, text=True, timeout=240, check=False)


def contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    # the five walls of docs/architecture.md, each checked
    assert set(contracts()) == {"layers", "public-api", "core-without-connectors",
                                "store-tables", "acyclic"}


def test_public_api_contract_forbids_every_core_module_but_the_api() -> None:
    # Given the core's top-level modules and packages today
    core = {f"integration_bus.{m.name}" for m in pkgutil.iter_modules(integration_bus.__path__)
            if not m.name.startswith("_")}
    # Then connectors may import only integration_bus.connector: a new core module is
    # forbidden the day it is added (or this test names it)
    forbidden = set(contracts()["public-api"]["forbidden_modules"])
    assert forbidden == core - {"integration_bus.connector"}


def test_layers_place_every_core_module() -> None:
    # Given the core's top-level modules and packages today
    core = {f"integration_bus.{m.name}" for m in pkgutil.iter_modules(integration_bus.__path__)
            if not m.name.startswith("_")}
    # Then each sits in exactly one layer, so none escapes the layers contract
    layers = contracts()["layers"]["layers"]
    placed = [name.strip() for layer in layers for name in layer.split("|")]
    assert sorted(placed) == sorted(core)


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packages and the contracts, to plant forbidden imports in."""
    root = tmp_path_factory.mktemp("walls")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("integration_bus", "connectors"):
        shutil.copytree(ROOT / package, root / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(("module", "planted", "contract", "shown"), [
    # a foundation reaching up to a face
    ("integration_bus/topology.py", "from integration_bus.web import app",
     "The core reads downwards", "integration_bus.topology -> integration_bus.web.app"),
    # the runtime reaching up to a face (what issue 17 removed)
    ("integration_bus/runtime.py", "from integration_bus.web.app import make_app",
     "The core reads downwards", "integration_bus.runtime -> integration_bus.web.app"),
    # a connector using a core internal instead of the public API
    ("connectors/log.py", "from integration_bus.store import Store",
     "Connectors use only the public plugin API",
     "connectors.log -> integration_bus.store"),
    # SQL against the store's tables outside store/
    ("integration_bus/reconcile.py", "from integration_bus.store.schema import journal",
     "Only integration_bus.store names the store's tables",
     "integration_bus.reconcile -> integration_bus.store.schema"),
    ("integration_bus/worker.py", "import sqlalchemy",
     "Only integration_bus.store names the store's tables", "integration_bus.worker -> sqlalchemy"),
    # a cycle hidden in a function body
    ("integration_bus/mapping/functions.py",
     "def _all() -> None:\n    from integration_bus.mapping import fn_text",
     "No import cycles", "integration_bus.mapping"),
])
def test_a_planted_forbidden_import_breaks_its_contract(tree_copy: Path, module: str,
                                                       planted: str, contract: str,
                                                       shown: str) -> None:
    # Given the tree with one forbidden import added to one module
    path = tree_copy / module
    original = path.read_text()
    path.write_text(f"{original}\n\n{planted}\n")
    try:
        # When import-linter checks it
        result = lint_imports(tree_copy)
    finally:
        path.write_text(original)
    # Then it exits 1, names the broken contract and the import
    assert result.returncode == 1, result.stdout + result.stderr
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken and shown in broken, result.stdout
