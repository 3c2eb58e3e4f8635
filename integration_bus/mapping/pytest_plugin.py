"""pytest plugin: every ``*_test.yaml`` sidecar case becomes a pytest item.

Enable with ``-p integration_bus.mapping.pytest_plugin`` (or a ``pytest11`` entry point) and run
``pytest mappings/``. The mappings folder is the nearest ancestor named ``mappings``; schemas are
its sibling ``schemas/`` (override with ``BUS_MAPPINGS_DIR`` / ``BUS_SCHEMAS_DIR``). Nothing here
runs at import time; pytest calls the hooks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration_bus.mapping.sidecar import CaseResult, PreparedCase, SidecarRunner

__all__ = ["SidecarFailure", "SidecarItem", "SidecarYamlFile", "pytest_collect_file",
           "sidecar_dirs"]


class SidecarFailure(Exception):
    """A sidecar case did not get what it expected."""


def sidecar_dirs(file: Path) -> tuple[Path, Path]:
    """(mappings folder, schemas folder) for a sidecar file."""
    env_mappings = os.environ.get("BUS_MAPPINGS_DIR")
    env_schemas = os.environ.get("BUS_SCHEMAS_DIR")
    mappings = Path(env_mappings) if env_mappings else next(
        (p for p in file.resolve().parents if p.name == "mappings"), file.resolve().parent)
    schemas = Path(env_schemas) if env_schemas else mappings.parent / "schemas"
    return mappings, schemas


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.endswith("_test.yaml"):
        collector: pytest.Collector = SidecarYamlFile.from_parent(parent, path=file_path)
        return collector
    return None


class SidecarYamlFile(pytest.File):
    """One sidecar file; its cases are the items."""

    def collect(self) -> Iterator[pytest.Item]:
        mappings, schemas = sidecar_dirs(self.path)
        runner = SidecarRunner(mappings_dir=mappings, schemas_dir=schemas)
        for entry in runner.collect([self.path]):
            name = entry.case.name if isinstance(entry, PreparedCase) else entry.name
            yield SidecarItem.from_parent(self, name=name, runner=runner, entry=entry)


class SidecarItem(pytest.Item):
    """One sidecar case."""

    def __init__(self, *, runner: SidecarRunner, entry: PreparedCase | CaseResult,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runner = runner
        self.entry = entry

    def runtest(self) -> None:
        result = self.entry if isinstance(self.entry, CaseResult) else self.runner.run(self.entry)
        if not result.passed:
            raise SidecarFailure(f"{result.title}\n{result.message}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, SidecarFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.entry.line - 1, f"sidecar: {self.name}"
