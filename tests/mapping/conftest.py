"""Fixtures for the mapping engine tests, and the hook that turns every sidecar case under the
repository's ``mappings/`` into a test (see ``test_sidecar_cases.py``)."""

from __future__ import annotations

import decimal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from integration_bus.mapping import CompiledMapping, load_mapping
from integration_bus.mapping.builtin_functions import default_registry
from integration_bus.mapping.context import Ctx
from integration_bus.mapping.expr_compiler import ExprCompiler, Scope
from integration_bus.mapping.functions import BindContext
from integration_bus.mapping.sidecar import CaseResult, PreparedCase, SidecarRunner
from integration_bus.mapping.values import DECIMAL_CONTEXT
from integration_bus.mapping.xref import Table

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "mappings"
SCHEMAS = REPO / "schemas"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``sidecar_case`` with every case of every ``mappings/**/*_test.yaml``."""
    if "sidecar_case" not in metafunc.fixturenames:
        return
    runner = SidecarRunner(mappings_dir=MAPPINGS, schemas_dir=SCHEMAS)
    entries = runner.collect([MAPPINGS])
    ids = [f"{Path(e.file).relative_to(REPO)}::"
           f"{e.case.name if isinstance(e, PreparedCase) else e.name}" for e in entries]
    metafunc.parametrize("sidecar_case", [(runner, e) for e in entries], ids=ids)


@pytest.fixture(scope="session")
def evaluate() -> Callable[..., Any]:
    """``evaluate(text, payload)``: compile one expression and run it on ``payload``."""
    tables = {"sku": Table("sku", "sku.csv", {"sku": {"A-1": "SKU-A", "7": "SKU-7"},
                                                 "name": {"A-1": "Apple", "7": "Seven"}})}
    compiler = ExprCompiler(default_registry(), BindContext(tables, {"upper_id": _upper_id}))

    def run(text: str, payload: Any = None, **meta: Any) -> Any:
        fn = compiler.compile(text, Scope()).fn
        with decimal.localcontext(DECIMAL_CONTEXT):
            return fn(payload, Ctx(payload, meta))

    return run


def _upper_id(value: Any) -> Any:
    return None if value == "missing" else f"ID-{str(value).upper()}"


@pytest.fixture
def make_mapping(tmp_path: Path) -> Callable[..., CompiledMapping]:
    """``make_mapping(yaml_text, schemas={...}, tables={...})``: write and load a mapping."""

    def make(text: str, *, schemas: dict[str, str] | None = None,
             tables: dict[str, str] | None = None, name: str = "m.yaml",
             **kwargs: Any) -> CompiledMapping:
        (tmp_path / "schemas").mkdir(exist_ok=True)
        (tmp_path / "xref").mkdir(exist_ok=True)
        for file, body in (schemas or {}).items():
            (tmp_path / "schemas" / file).write_text(body)
        for file, body in (tables or {}).items():
            (tmp_path / "xref" / file).write_text(textwrap.dedent(body))
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return load_mapping(path, xref_dir=tmp_path / "xref", schemas_dir=tmp_path / "schemas",
                            **kwargs)

    return make


def run_payload(mapping: CompiledMapping, payload: Any) -> list[Any]:
    """Output payloads of one run (no envelopes)."""
    return [doc for _, doc in mapping.run(payload)]


__all__ = ["MAPPINGS", "REPO", "SCHEMAS", "CaseResult", "run_payload"]
