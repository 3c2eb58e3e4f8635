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

Optional fixtures (a test that needs one the subclass does not give is skipped, saying so):
``refused_envelope`` (an envelope the target refuses: PermanentError expected),
``make_unreachable_sink`` (a sink whose target is down: TransientError expected),
``make_silent_sink`` (a sink whose target answers "success" without the answer the sink
expects, e.g. an empty HTTP 200: no silent success, a BusError expected). Set the class
attribute ``idempotent_target = False`` for a target that cannot deduplicate and a sink that
cannot look up (a log): the redelivery test is then skipped with that reason.
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

__all__ = ["EffectCount", "EnvelopeFactory", "SinkContract", "SinkFactory"]

SinkFactory = Callable[[], Sink]
EnvelopeFactory = Callable[[str], Envelope]
EffectCount = Callable[[str], int]


class SinkContract(ContractBusFixture):
    """The documented contract of a :class:`~integration_bus.connector.Sink`: one effect per
    idempotency key at the target (after a redelivery too, or a lookup that says it is done),
    failures classified TransientError (retry) or PermanentError (dead-letter), ``close()``
    idempotent, a BatchSink's outcomes one per envelope in order, and no silent success: a
    target's "OK" without the answer the sink expects is not a delivery."""

    #: False: the target cannot deduplicate and the sink cannot look up (skip redelivery)
    idempotent_target: ClassVar[bool] = True

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

    @pytest.fixture
    def refused_envelope(self) -> Envelope | None:
        """An envelope the target refuses (bad data): delivering it raises PermanentError."""
        return None

    @pytest.fixture
    def make_unreachable_sink(self) -> SinkFactory | None:
        """A sink whose target cannot be reached: delivering raises TransientError."""
        return None

    @pytest.fixture
    def make_silent_sink(self) -> SinkFactory | None:
        """A sink whose target answers success without the answer the sink checks for (an
        empty 200, another operation's response): delivering must not count as done."""
        return None

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
        sink = make_sink()
        try:
            for key in ("contract-a", "contract-b", "contract-c"):
                assert effects(key) == 0, f"the target holds {key!r} before any delivery"
                sink.deliver(make_envelope(key))
            counts = {key: effects(key) for key in ("contract-a", "contract-b", "contract-c")}
            assert counts == {"contract-a": 1, "contract-b": 1, "contract-c": 1}, counts
        finally:
            sink.close()

    def test_a_redelivery_after_a_crash_has_no_second_effect(
            self, make_sink: SinkFactory, make_envelope: EnvelopeFactory,
            effects: EffectCount) -> None:
        if not self.idempotent_target:
            pytest.skip("the target cannot deduplicate and the sink cannot look up "
                        "(idempotent_target = False): the ledger alone suppresses repeats")
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

    def test_a_lookup_finds_only_what_was_delivered(self, make_sink: SinkFactory,
                                                     make_envelope: EnvelopeFactory) -> None:
        sink = make_sink()
        try:
            if not isinstance(sink, LookupSink):
                pytest.skip("not a LookupSink")
            delivered, other = make_envelope("contract-look"), make_envelope("contract-never")
            assert not sink.lookup(delivered), "lookup() finds a key before its delivery"
            sink.deliver(delivered)
            assert sink.lookup(delivered) and not sink.lookup(other)
        finally:
            sink.close()

    def test_a_batch_has_one_outcome_per_envelope_in_order(
            self, make_sink: SinkFactory, make_envelope: EnvelopeFactory,
            effects: EffectCount) -> None:
        sink = make_sink()
        try:
            if not isinstance(sink, BatchSink):
                pytest.skip("not a BatchSink")
            keys = [f"contract-batch-{n}" for n in range(5)]
            outcomes = sink.deliver_many([make_envelope(k) for k in keys])
            assert outcomes == [None] * len(keys), outcomes
            assert [effects(k) for k in keys] == [1] * len(keys)
        finally:
            sink.close()

    def test_a_refusal_is_permanent(self, make_sink: SinkFactory,
                                    refused_envelope: Envelope | None,
                                    effects: EffectCount) -> None:
        if refused_envelope is None:
            pytest.skip("no refused_envelope fixture: the target refuses nothing")
        sink = make_sink()
        try:
            with pytest.raises(PermanentError) as raised:
                sink.deliver(refused_envelope)
            assert str(raised.value), "a PermanentError says what was refused"
            assert effects(refused_envelope.idempotency_key) == 0
        finally:
            sink.close()

    def test_an_unreachable_target_is_transient(
            self, make_unreachable_sink: SinkFactory | None,
            make_envelope: EnvelopeFactory) -> None:
        if make_unreachable_sink is None:
            pytest.skip("no make_unreachable_sink fixture: the target cannot be down")
        sink = make_unreachable_sink()
        try:
            with pytest.raises(TransientError):
                sink.deliver(make_envelope("contract-down"))
        finally:
            sink.close()

    def test_a_success_without_its_answer_is_not_a_delivery(
            self, make_silent_sink: SinkFactory | None,
            make_envelope: EnvelopeFactory) -> None:
        if make_silent_sink is None:
            pytest.skip("no make_silent_sink fixture: the target's answer carries nothing "
                        "to check")
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
