"""Transports: RabbitMQ (``amqp``, kombu) and embedded mode's queues in the store (``embedded``)."""

from __future__ import annotations

from integration_bus.transport.base import (
    Consumer,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
    TransportPublisher,
)
from integration_bus.transport.embedded import EmbeddedTransport

__all__ = [
    "Consumer",
    "Delivery",
    "EmbeddedTransport",
    "Outgoing",
    "QueueStats",
    "Transport",
    "TransportPublisher",
]
