"""Putting test messages on a bus."""

from __future__ import annotations

from integration_bus.envelope import Envelope
from integration_bus.runtime import Bus


def publish_orders(bus: Bus, count: int) -> list[Envelope]:
    """Publish ``count`` order.created envelopes (confirmed); return them."""
    envelopes = [Envelope.create("order.created", {"n": i}, source="test")
                 for i in range(count)]
    publisher = bus.publisher()
    try:
        assert publisher.publish_many(envelopes) == [None] * count
    finally:
        publisher.close()
    return envelopes
