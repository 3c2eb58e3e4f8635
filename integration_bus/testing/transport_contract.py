"""``TransportContract``: the pytest suite every transport passes (``transport.base``).

Subclass it (class name starting with ``Test``) and provide a ``transport`` fixture: a new,
open transport on an empty broker (or store), not yet declared. The suite declares its own
topology (one route ``contract`` taking ``contract.#``, one retry tier) and checks: a publish
returns once confirmed and routed; a type no route takes is an UnroutableError (mandatory);
``publish_many`` has one outcome per envelope in order; a consumer gets what was published and
an ack removes it; what a consumer held unacked when it closed is delivered again, marked
redelivered; ``retry_later`` brings a message back to its route's queue after the delay.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import pytest

from integration_bus.envelope import Envelope
from integration_bus.errors import UnroutableError
from integration_bus.testing.waiting import wait_for
from integration_bus.topology import RouteBinding, Topology, route_queue
from integration_bus.transport.base import Consumer, Delivery, Transport

__all__ = ["TransportContract"]

ROUTE = "contract"
QUEUE = route_queue(ROUTE)
TOPOLOGY = Topology(routes=(RouteBinding(route=ROUTE, patterns=("contract.#",),
                                         delivery_limit=5),),
                    retry_tiers_ms=(200,))


def _envelope(n: int) -> Envelope:
    return Envelope.create("contract.sent", {"n": n}, source="contract",
                           idempotency_key=f"contract-{n}")


class TransportContract:
    """The documented contract of a :class:`~integration_bus.transport.base.Transport`."""

    settle_timeout: ClassVar[float] = 30.0

    @pytest.fixture
    def transport(self) -> Transport:
        raise NotImplementedError(f"{type(self).__name__} must provide the transport fixture")

    @pytest.fixture
    def declared(self, transport: Transport) -> Iterator[Transport]:
        transport.declare(TOPOLOGY)
        yield transport
        transport.close()

    @contextmanager
    def consuming(self, transport: Transport, prefetch: int = 10) -> Iterator[Consumer]:
        consumer = transport.consumer([QUEUE], prefetch)
        try:
            yield consumer
        finally:
            consumer.close()

    def take(self, consumer: Consumer, count: int) -> list[Delivery]:
        """``count`` deliveries, waiting up to ``settle_timeout``; AssertionError otherwise."""
        got: list[Delivery] = []
        deadline = time.monotonic() + self.settle_timeout
        while len(got) < count:
            assert time.monotonic() < deadline, \
                f"{len(got)} of {count} deliveries after {self.settle_timeout} s"
            got += consumer.fetch(count - len(got), 0.2)
        return got

    # -- the contract --------------------------------------------------------------------------
    def test_a_published_envelope_is_consumed_and_acked_away(self, declared: Transport) -> None:
        publisher = declared.publisher()
        sent = _envelope(1)
        try:
            publisher.publish(sent)
        finally:
            publisher.close()
        with self.consuming(declared) as consumer:
            (delivery,) = self.take(consumer, 1)
            assert delivery.queue == QUEUE and not delivery.redelivered
            assert Envelope.from_json(delivery.body).id == sent.id
            consumer.ack([delivery])
        wait_for(lambda: _depth(declared) == 0, timeout=self.settle_timeout,
                 message="the acked message gone from the route queue")

    def test_a_type_no_route_takes_is_unroutable(self, declared: Transport) -> None:
        publisher = declared.publisher()
        try:
            with pytest.raises(UnroutableError):
                publisher.publish(Envelope.create("nobody.listens", {}, source="contract"))
        finally:
            publisher.close()

    def test_publish_many_has_one_outcome_per_envelope_in_order(
            self, declared: Transport) -> None:
        publisher = declared.publisher()
        batch = [_envelope(1), Envelope.create("nobody.listens", {}, source="contract"),
                 _envelope(2)]
        try:
            outcomes = publisher.publish_many(batch)
        finally:
            publisher.close()
        assert outcomes[0] is None and outcomes[2] is None, outcomes
        assert isinstance(outcomes[1], UnroutableError), outcomes
        wait_for(lambda: _depth(declared) == 2, timeout=self.settle_timeout,
                 message="two messages counted in the route queue")
        with self.consuming(declared) as consumer:
            deliveries = self.take(consumer, 2)
            ids = [Envelope.from_json(d.body).id for d in deliveries]
            assert ids == [batch[0].id, batch[2].id]
            consumer.ack(deliveries)

    def test_what_a_closed_consumer_held_unacked_is_redelivered(
            self, declared: Transport) -> None:
        publisher = declared.publisher()
        try:
            publisher.publish(_envelope(7))
        finally:
            publisher.close()
        with self.consuming(declared) as first:
            (held,) = self.take(first, 1)
        with self.consuming(declared) as second:
            (again,) = self.take(second, 1)
            assert again.redelivered, "a message handed out before is marked redelivered"
            assert again.body == held.body
            second.ack([again])

    def test_retry_later_brings_the_message_back_to_its_route(
            self, declared: Transport) -> None:
        publisher = declared.publisher()
        retried = _envelope(9).next_attempt()
        try:
            assert publisher.retry_later(ROUTE, [retried], 200) == [None]
        finally:
            publisher.close()
        with self.consuming(declared) as consumer:
            (back,) = self.take(consumer, 1)
            envelope = Envelope.from_json(back.body)
            assert (envelope.id, envelope.attempt) == (retried.id, retried.attempt)
            consumer.ack([back])
        assert declared.retry_waiting() == 0

    def test_close_is_idempotent(self, transport: Transport) -> None:
        transport.declare(TOPOLOGY)
        transport.close()
        transport.close()


def _depth(transport: Transport) -> int:
    stats = transport.queue_stats(QUEUE)
    return stats.messages if stats is not None else -1
