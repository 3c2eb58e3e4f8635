"""``SourceContract``: the pytest suite every source passes (see ``integration_bus.connector``).

A source brings each unit of its system's input (a line, a file, a webhook, an order) in as an
envelope and acknowledges its system (archive, 2xx, cursor) only after the bus confirmed the
publish; when publishing fails it acknowledges nothing and loses nothing; a new instance after
a restart re-publishes at most what was not acknowledged, under the same idempotency keys.

Subclass it (class name starting with ``Test``) and provide::

    @pytest.fixture
    def make_source(self, tmp_path):      # context -> a new source instance
        return lambda context: MySource(MyConfig(...), context)

    @pytest.fixture
    def feed(self, tmp_path):             # n -> put n new units of input into the system,
        return lambda n: ...              #      each of which becomes one envelope

    @pytest.fixture
    def acknowledged(self, tmp_path):     # () -> how many units the system saw acknowledged
        return lambda: ...                #      (None for a polling source: the cursor moves
                                          #      in the transaction that stages the envelopes)

The suite hands ``make_source`` a context of the ``contract_bus`` fixture (a real embedded bus)
whose publishing it can make fail; ``Source`` sources are run in a thread
(``run(publisher, stop)``), ``PollingSource`` sources are polled in a loop. ``settle_timeout``
(class attribute, seconds) bounds every wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar

import pytest

from integration_bus.connector import (
    BusError,
    ConnectorContext,
    Envelope,
    PollingSource,
    Source,
    check_type,
)
from integration_bus.testing.contract_bus import ContractBus, ContractBusFixture
from integration_bus.testing.threads import running
from integration_bus.testing.waiting import wait_for

__all__ = ["AckCount", "Feed", "SourceContract", "SourceFactory"]

SourceFactory = Callable[[ConnectorContext], Source | PollingSource]
Feed = Callable[[int], None]
AckCount = Callable[[], int | None]

INSTANCE = "contract_source"


class SourceContract(ContractBusFixture):
    """The documented contract of a Source / PollingSource (see the module docstring)."""

    settle_timeout: ClassVar[float] = 30.0
    #: how often a PollingSource is polled while the suite drives it (seconds)
    poll_every: ClassVar[float] = 0.05

    # -- what a subclass provides ----------------------------------------------------------------
    @pytest.fixture
    def make_source(self) -> SourceFactory:
        raise NotImplementedError(f"{type(self).__name__} must provide the make_source fixture")

    @pytest.fixture
    def feed(self) -> Feed:
        raise NotImplementedError(f"{type(self).__name__} must provide the feed fixture")

    @pytest.fixture
    def acknowledged(self) -> AckCount:
        raise NotImplementedError(f"{type(self).__name__} must provide acknowledged "
                                  "(a callable returning None when the source acks nothing)")

    # -- driving a source --------------------------------------------------------------------------
    @contextmanager
    def driven(self, source: Source | PollingSource,
               contract_bus: ContractBus) -> Iterator[threading.Event]:
        """Run ``source`` as the runtime would until the block ends; then close it."""
        try:
            if isinstance(source, Source):
                def run(stop: threading.Event) -> None:
                    publisher = contract_bus.publisher()
                    try:
                        source.run(publisher, stop)
                    finally:
                        publisher.close()
            else:
                polling = source

                def run(stop: threading.Event) -> None:
                    while not stop.is_set():
                        try:
                            polling.poll()
                        except BusError:  # the runtime logs it and polls again next round
                            pass
                        stop.wait(self.poll_every)
            with running(run, name=f"source:{source.name}") as stop:
                yield stop
        finally:
            source.close()

    def _wait(self, condition: Callable[[], bool], message: str) -> None:
        wait_for(condition, timeout=self.settle_timeout, message=message)

    # -- the contract --------------------------------------------------------------------------
    def test_is_a_source_with_a_name(self, make_source: SourceFactory,
                                     contract_bus: ContractBus) -> None:
        source = make_source(contract_bus.context(INSTANCE))
        try:
            assert isinstance(source, Source | PollingSource), \
                f"{source!r} is neither a Source (run) nor a PollingSource (poll)"
            assert isinstance(source.name, str) and source.name
        finally:
            source.close()

    def test_each_unit_of_input_becomes_an_acknowledged_envelope(
            self, make_source: SourceFactory, feed: Feed, acknowledged: AckCount,
            contract_bus: ContractBus) -> None:
        # Given three units of input at the system
        feed(3)
        # When the source runs
        with self.driven(make_source(contract_bus.context(INSTANCE)), contract_bus):
            self._wait(lambda: len(contract_bus.keys()) >= 3, "three envelopes confirmed")
            # Then each became one envelope with its own idempotency key, and was acknowledged
            if acknowledged() is not None:
                self._wait(lambda: acknowledged() == 3, "the three units acknowledged")
        envelopes = contract_bus.confirmed
        assert len(contract_bus.keys()) == 3, sorted(contract_bus.keys())
        for envelope in envelopes:
            assert isinstance(envelope, Envelope)
            check_type(envelope.type)
            assert envelope.idempotency_key, f"{envelope.id} has no idempotency key"

    def test_nothing_is_acknowledged_or_lost_while_publishing_fails(
            self, make_source: SourceFactory, feed: Feed, acknowledged: AckCount,
            contract_bus: ContractBus) -> None:
        # Given a broker (or store) that refuses every publish
        contract_bus.gate.close()
        feed(2)
        premature: list[int] = []

        def acked_within_confirmed() -> bool:
            count = acknowledged()
            if count is not None and count > len(contract_bus.keys()):
                premature.append(count)
            return True

        with self.driven(make_source(contract_bus.context(INSTANCE)), contract_bus):
            # When the source has tried to publish
            self._wait(lambda: contract_bus.gate.attempts >= 1, "a publish attempt")
            # Then it acknowledged nothing
            assert acknowledged() in (0, None), "input acknowledged while publishing failed"
            assert contract_bus.confirmed == []
            # And once the broker is back, every unit arrives and is acknowledged after it
            contract_bus.gate.open()
            self._wait(lambda: acked_within_confirmed() and len(contract_bus.keys()) >= 2,
                       "both envelopes confirmed after the outage")
            if acknowledged() is not None:
                self._wait(lambda: acked_within_confirmed() and acknowledged() == 2,
                           "both units acknowledged after the outage")
        assert not premature, f"acknowledged {premature[0]} unit(s) before their confirm"
        assert len(contract_bus.keys()) == 2

    def test_a_restart_loses_nothing_and_keeps_keys(
            self, make_source: SourceFactory, feed: Feed, contract_bus: ContractBus) -> None:
        # Given a source that brought two units in and was stopped
        feed(2)
        with self.driven(make_source(contract_bus.context(INSTANCE)), contract_bus):
            self._wait(lambda: len(contract_bus.keys()) >= 2, "two envelopes confirmed")
        first_keys = contract_bus.keys()
        # When a new instance runs after one more unit arrived
        feed(1)
        with self.driven(make_source(contract_bus.context(INSTANCE)), contract_bus):
            self._wait(lambda: len(contract_bus.keys()) >= 3, "the third envelope confirmed")
        # Then the new unit came in, and anything sent again kept its idempotency key
        keys = contract_bus.keys()
        assert first_keys < keys and len(keys) == 3, (sorted(first_keys), sorted(keys))

    def test_close_is_idempotent(self, make_source: SourceFactory,
                                 contract_bus: ContractBus) -> None:
        source = make_source(contract_bus.context(INSTANCE))
        source.close()
        source.close()
