"""A real embedded bus for contract suites, with a gate that makes publishing fail on cue.

Contract suites build the source or sink under test with :meth:`ContractBus.context`: a genuine
:class:`~integration_bus.connector.ConnectorContext` of an embedded bus (SQLite store in a
directory of the test), whose publishers and ``stage`` pass through a :class:`PublishGate`.
While the gate is closed every publish and stage fails as a broker or store outage would; what
passes is published for real (one catch-all route takes every type) and recorded in
:attr:`ContractBus.confirmed` only after the bus confirmed it.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from integration_bus.connector import (
    BusError,
    ConnectorContext,
    ConnectorPlugin,
    Envelope,
    Publisher,
)
from integration_bus.errors import BrokerUnavailable, StoreUnavailable
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.testing.harness import open_bus

__all__ = ["ContractBus", "ContractBusFixture", "PublishGate"]

COLLECTOR = "contract_collect"
CONFIG = """\
store: {url: "sqlite:///var/contract.db"}
sinks: {collected: {connector: contract_collect}}
routes: {everything: {from: ["#"], to: [collected]}}
"""


class PublishGate:
    """Open (publishes pass) or closed (every publish and stage fails). Thread-safe.
    ``attempts`` counts publish/stage calls made while closed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self.attempts = 0

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def open(self) -> None:
        with self._lock:
            self._closed = False

    def refused(self) -> bool:
        """True (and one more attempt counted) while closed."""
        with self._lock:
            if self._closed:
                self.attempts += 1
            return self._closed


class ContractBus:
    """An opened embedded bus under ``root`` whose only route takes every message type.
    ``close()`` is idempotent."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        collector = ConnectorPlugin(name=COLLECTOR, summary="the contract bus's catch-all sink",
                                    sink_config=_CollectConfig, create_sink=_CollectSink)
        self.bus: Bus = open_bus(CONFIG, root=root, registry=Registry([collector]), environ={})
        self.gate = PublishGate()
        self._lock = threading.Lock()
        self._confirmed: list[Envelope] = []

    @property
    def confirmed(self) -> list[Envelope]:
        """Envelopes the bus confirmed (published and routed, or staged), in order."""
        with self._lock:
            return list(self._confirmed)

    def keys(self) -> set[str]:
        """The idempotency keys of :attr:`confirmed`."""
        return {e.idempotency_key for e in self.confirmed}

    def context(self, instance: str) -> ConnectorContext:
        """The context the runtime would hand plugin instance ``instance``, its publishers and
        ``stage`` behind the gate."""
        return dataclasses.replace(self.bus.context(instance), open_publisher=self.publisher,
                                   stage=functools.partial(self._stage, instance))

    def publisher(self) -> Publisher:
        """A publisher of the bus behind the gate (thread-confined, like the bus's own)."""
        return _GatedPublisher(self.bus.publisher(), self)

    def close(self) -> None:
        self.bus.close()

    def _stage(self, instance: str, envelopes: Sequence[Envelope],
               cursor: tuple[str, str] | None) -> None:
        if self.gate.refused():
            raise StoreUnavailable("the store is unavailable (contract gate closed)")
        self.bus.stage(instance, envelopes, cursor)
        self._record(envelopes)

    def _record(self, envelopes: Sequence[Envelope]) -> None:
        with self._lock:
            self._confirmed.extend(envelopes)


class _GatedPublisher:
    def __init__(self, inner: Publisher, owner: ContractBus) -> None:
        self._inner = inner
        self._owner = owner

    def publish(self, envelope: Envelope) -> None:
        (outcome,) = self.publish_many([envelope])
        if outcome is not None:
            raise outcome

    def publish_many(self, envelopes: Sequence[Envelope]) -> list[BusError | None]:
        if self._owner.gate.refused():
            return [BrokerUnavailable("the broker is unavailable (contract gate closed)")
                    for _ in envelopes]
        outcomes = self._inner.publish_many(envelopes)
        self._owner._record([e for e, o in zip(envelopes, outcomes, strict=True) if o is None])
        return outcomes

    def close(self) -> None:
        self._inner.close()


class _CollectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _CollectSink:
    """Takes every envelope (the contract bus runs no worker; the route only makes publishing
    routable)."""

    def __init__(self, config: _CollectConfig, context: ConnectorContext) -> None:
        self.name = context.instance

    def deliver(self, envelope: Envelope) -> None:
        """Nothing to do: the contract suites read what was confirmed, not what was routed."""

    def close(self) -> None:
        """Nothing to release."""


class ContractBusFixture:
    """The ``contract_bus`` fixture, for the contract suites that build plugins on it."""

    @pytest.fixture
    def contract_bus(self, tmp_path: Path) -> Iterator[ContractBus]:
        """A :class:`ContractBus` in ``tmp_path/contract-bus``, closed after the test."""
        bus = ContractBus(tmp_path / "contract-bus")
        try:
            yield bus
        finally:
            bus.close()
