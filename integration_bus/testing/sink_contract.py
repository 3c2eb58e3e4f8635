"""``SinkContract``: the pytest suite every sink passes (see ``integration_bus.connector.Sink``).

Subclass it in a test module (the name must start with ``Test``) and provide the fixtures::

    class TestMySink(SinkContract):
        @pytest.fixture
        def make_sink(self, contract_bus, tmp_path):       # () -> a new sink instance
            return lambda: MySink(MyConfig(...), contract_bus.context("out"))

        @pytest.fixture
        def make_envelope(self):                          # key -> an envelope it delivers
            return lambda key: Envelope.create("order.created", {...}, source="t",
                                               idempotency_key=key)

        @pytest.fixture
        def effects(self, tmp_path):                      # key -> effects at the target
            return lambda key: count_of(key)

Optional fixtures (a test that needs one the subclass does not give is not collected for that
subclass: it does not apply, so it is neither run nor reported as a skip):
``refused_envelope`` (an envelope the target refuses: PermanentError expected),
``make_unreachable_sink`` (a sink whose target is down: TransientError expected),
``make_silent_sink`` (a sink whose target answers "success" without the answer the sink
expects, e.g. an empty HTTP 200: no silent success, a BusError expected). Set the class
attribute ``idempotent_target = False`` for a target that cannot deduplicate and a sink that
cannot look up (a log): the redelivery test is then not collected. A LookupSink's ``lookup``
and a BatchSink's ``deliver_many`` are checked inside the tests every sink runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pytest

from integration_bus.connector import (
    BatchSink,
    BusError,
    Envelope,
    LookupSink,
    PermanentError,
    Sink,
    TransientError,
)
from integration_bus.testing.contract_bus import ContractBusFixture

__all__ = ["EffectCount", "EnvelopeFactory", "SinkContract", "SinkFactory", "applies"]

SinkFactory = Callable[[], Sink]
EnvelopeFactory = Callable[[str], Envelope]
EffectCount = Callable[[str], int]


class SinkContract(ContractBusFixture):
    """The documented contract of a :class:`~integration_bus.connector.Sink`: one effect per
    idempotency key at the target (after a redelivery too, or a lookup that says it is done),
    failures classified TransientError (retry) or PermanentError (dead-letter), ``close()``
    idempotent, a BatchSink's outcomes one per envelope in order, and no silent success: a
    target's "OK" without the answer the sink expects is not a delivery."""

    #: False: the target cannot deduplicate and the sink cannot look up (no redelivery test)
    idempotent_target: ClassVar[bool] = True
    #: test -> the optional fixture it needs (the kit's pytest plugin leaves the test out of a
    #: subclass that does not provide the fixture)
    needs_fixture: ClassVar[dict[str, str]] = {
        "test_a_refusal_is_permanent": "refused_envelope",
        "test_an_unreachable_target_is_transient": "make_unreachable_sink",
        "test_a_success_without_its_answer_is_not_a_delivery": "make_silent_sink",
    }

    # -- what a subclass provides ----------------------------------------------------------------
    @pytest.fixture
    def make_sink(self) -> SinkFactory:
        """A new instance of the sink under test, each call (two instances = two workers, or
        a worker before and after a crash)."""
        raise NotImplementedError(f"{type(self).__name__} must provide the make_sink fixture")

    @pytest.fixture
    def make_envelope(self) -> EnvelopeFactory:
        """An envelope the sink delivers, with the given idempotency key."""
        raise NotImplementedError(f"{type(self).__name__} must provide make_envelope")

    @pytest.fixture
    def effects(self) -> EffectCount:
        """How many times the target holds the effect of the given idempotency key."""
        raise NotImplementedError(f"{type(self).__name__} must provide the effects fixture")

    # optional (see ``needs_fixture``): an envelope the target refuses (bad data: delivering
    # it raises PermanentError) as ``refused_envelope``; a sink whose target cannot be reached
    # (TransientError) as ``make_unreachable_sink``; a sink whose target answers success
    # without the answer the sink checks for (an empty 200, another operation's response:
    # must not count as done) as ``make_silent_sink``

    # -- the contract --------------------------------------------------------------------------
    def test_is_a_sink_with_a_name(self, make_sink: SinkFactory) -> None:
        sink = make_sink()
        try:
            assert isinstance(sink, Sink), f"{sink!r} lacks deliver()/close()/name"
            assert isinstance(sink.name, str) and sink.name, "a sink names its instance"
        finally:
            sink.close()

    def test_each_key_takes_effect_once(self, make_sink: SinkFactory,
                                        make_envelope: EnvelopeFactory,
                                        effects: EffectCount) -> None:
        """Three keys, one effect each: a BatchSink gets them in one ``deliver_many`` (one
        outcome per envelope, in order); a LookupSink finds each once delivered, and only
        those."""
        keys = ("contract-a", "contract-b", "contract-c")
        envelopes = [make_envelope(key) for key in keys]
        sink = make_sink()
        try:
            for envelope in envelopes:
                key = envelope.idempotency_key
                assert effects(key) == 0, f"the target holds {key!r} before any delivery"
                if isinstance(sink, LookupSink):
                    assert not sink.lookup(envelope), \
                        f"lookup() finds {key!r} before its delivery"
            if isinstance(sink, BatchSink):
                outcomes = sink.deliver_many(envelopes)
                assert outcomes == [None] * len(keys), outcomes
            else:
                for envelope in envelopes:
                    sink.deliver(envelope)
            counts = {key: effects(key) for key in keys}
            assert counts == dict.fromkeys(keys, 1), counts
            if isinstance(sink, LookupSink):
                assert all(sink.lookup(envelope) for envelope in envelopes), \
                    "lookup() misses a delivered key"
                assert not sink.lookup(make_envelope("contract-never")), \
                    "lookup() finds a key never delivered"
        finally:
            sink.close()

    def test_a_redelivery_after_a_crash_has_no_second_effect(
            self, make_sink: SinkFactory, make_envelope: EnvelopeFactory,
            effects: EffectCount) -> None:
        # Given a key delivered by one worker's sink, which then died before the ledger knew
        first = make_sink()
        envelope = make_envelope("contract-again")
        first.deliver(envelope)
        first.close()
        # When another instance gets the same message again
        second = make_sink()
        try:
            if isinstance(second, LookupSink):
                # Then a LookupSink says it is done, so the runtime does not re-send it
                assert second.lookup(envelope), "lookup() misses a delivered key"
            else:
                # Then delivering it again leaves one effect at the target
                second.deliver(envelope.next_attempt())
            assert effects("contract-again") == 1, "the redelivery took effect twice"
        finally:
            second.close()

    def test_a_refusal_is_permanent(self, make_sink: SinkFactory,
                                    refused_envelope: Envelope,
                                    effects: EffectCount) -> None:
        sink = make_sink()
        try:
            with pytest.raises(PermanentError) as raised:
                sink.deliver(refused_envelope)
            assert str(raised.value), "a PermanentError says what was refused"
            assert effects(refused_envelope.idempotency_key) == 0
        finally:
            sink.close()

    def test_an_unreachable_target_is_transient(
            self, make_unreachable_sink: SinkFactory,
            make_envelope: EnvelopeFactory) -> None:
        sink = make_unreachable_sink()
        try:
            with pytest.raises(TransientError):
                sink.deliver(make_envelope("contract-down"))
        finally:
            sink.close()

    def test_a_success_without_its_answer_is_not_a_delivery(
            self, make_silent_sink: SinkFactory,
            make_envelope: EnvelopeFactory) -> None:
        sink = make_silent_sink()
        try:
            with pytest.raises(BusError) as raised:
                sink.deliver(make_envelope("contract-silent"))
            assert isinstance(raised.value, TransientError | PermanentError), \
                f"{type(raised.value).__name__} is neither transient nor permanent"
        finally:
            sink.close()

    def test_close_is_idempotent(self, make_sink: SinkFactory,
                                 make_envelope: EnvelopeFactory) -> None:
        sink = make_sink()
        sink.deliver(make_envelope("contract-close"))
        sink.close()
        sink.close()


def applies(cls: type, test: str) -> bool:
    """Whether contract test ``test`` applies to the contract subclass ``cls``: it provides the
    optional fixture the test needs, and (for the redelivery test) its target deduplicates."""
    if not issubclass(cls, SinkContract):
        return True
    if test == "test_a_redelivery_after_a_crash_has_no_second_effect":
        return cls.idempotent_target
    fixture = cls.needs_fixture.get(test)
    return fixture is None or hasattr(cls, fixture)
