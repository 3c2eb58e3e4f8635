"""pytest fixtures of the test kit: ``running_bus`` and ``contract_bus``.

Loaded automatically (entry point ``pytest11``) wherever integration-bus is installed; with
plugin autoload off, name it in a conftest: ``pytest_plugins =
["integration_bus.testing.pytest_plugin"]``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

if TYPE_CHECKING:  # the kit is imported when a test first uses it, not at pytest's start
    from integration_bus.registry import Registry
    from integration_bus.testing.contract_bus import ContractBus
    from integration_bus.testing.harness import RunningBus

# failing contract checks show their values, as asserts in tests do
pytest.register_assert_rewrite("integration_bus.testing.sink_contract",
                               "integration_bus.testing.source_contract",
                               "integration_bus.testing.transport_contract",
                               "integration_bus.testing.harness")

__all__ = ["StartBus", "contract_bus", "pytest_collection_modifyitems", "running_bus"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the contract tests that do not apply to a subclass (it gives no fixture for a
    refusal, an outage or a silent target; its target cannot deduplicate): deselected, not
    skipped, so a run reports only what was checked."""
    contracts = sys.modules.get("integration_bus.testing.sink_contract")
    if contracts is None:  # no test module imported the contract suites
        return
    applies = contracts.applies

    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        cls = getattr(item, "cls", None)
        name = getattr(item, "originalname", item.name)
        (kept if cls is None or applies(cls, name) else left_out).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


class StartBus(Protocol):
    """What the ``running_bus`` fixture is: call it to get a started :class:`RunningBus`."""

    def __call__(self, config: Path | str, *, registry: Registry | None = None,
                 environ: Mapping[str, str] | None = None,
                 routes: Sequence[str] | None = None, sources: Sequence[str] | None = None,
                 workers: int = 1) -> RunningBus: ...


@pytest.fixture
def running_bus(tmp_path: Path) -> Iterator[StartBus]:
    """Start a bus in threads: ``running_bus(config_dir_or_yaml_text, registry=...,
    environ=..., routes=..., sources=..., workers=1)``. YAML text is written to
    ``tmp_path/config/bus.yaml`` (relative paths in it are under ``tmp_path``). Every bus
    started is stopped (re-raising a thread's error) and closed after the test."""
    from integration_bus.testing.harness import RunningBus, open_bus

    started: list[RunningBus] = []

    def start(config: Path | str, *, registry: Registry | None = None,
              environ: Mapping[str, str] | None = None,
              routes: Sequence[str] | None = None, sources: Sequence[str] | None = None,
              workers: int = 1) -> RunningBus:
        bus = open_bus(config, root=tmp_path, registry=registry, environ=environ)
        running_bus = RunningBus(bus, routes=routes, sources=sources, workers=workers)
        started.append(running_bus)
        return running_bus.start()

    try:
        yield start
    finally:
        errors: list[BaseException] = []
        for running_bus in reversed(started):
            try:
                running_bus.stop()
            except BaseException as exc:  # every bus is closed; the first error is raised
                errors.append(exc)
            finally:
                running_bus.bus.close()
        if errors:
            raise errors[0]


@pytest.fixture
def contract_bus(tmp_path: Path) -> Iterator[ContractBus]:
    """A :class:`ContractBus` (embedded, under ``tmp_path/contract-bus``), closed after."""
    from integration_bus.testing.contract_bus import ContractBus

    bus = ContractBus(tmp_path / "contract-bus")
    try:
        yield bus
    finally:
        bus.close()
