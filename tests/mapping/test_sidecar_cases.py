"""Every sidecar case under mappings/ is a pytest test (parametrized by conftest's hook)."""

from __future__ import annotations

from typing import Any

from integration_bus.mapping.sidecar import CaseResult


def test_sidecar_case(sidecar_case: tuple[Any, Any]) -> None:
    runner, entry = sidecar_case
    result = entry if isinstance(entry, CaseResult) else runner.run(entry)
    assert result.passed, f"{result.title}: {result.message}"
