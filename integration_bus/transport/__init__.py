"""Transports: RabbitMQ (``amqp``) and the embedded in-process broker (``memory``), on kombu."""

from __future__ import annotations

from integration_bus.settings.models import BrokerSettings
from integration_bus.transport.base import (
    Consumer,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
    TransportPublisher,
)
from integration_bus.transport.memory import EmbeddedBroker, MemoryTransport

__all__ = [
    "Consumer",
    "Delivery",
    "EmbeddedBroker",
    "MemoryTransport",
    "Outgoing",
    "QueueStats",
    "Transport",
    "TransportPublisher",
    "open_transport",
]


def open_transport(broker: BrokerSettings, embedded: EmbeddedBroker | None = None) -> Transport:
    """RabbitMQ when ``broker.url`` is set, else the embedded broker (a new one unless given)."""
    if broker.url is None:
        return MemoryTransport(embedded, max_message=broker.max_message)
    from integration_bus.transport.amqp import AmqpTransport

    return AmqpTransport(broker.url, heartbeat=broker.heartbeat,
                         connect_timeout=broker.connect_timeout / 1000,
                         confirm_window=broker.confirm_window, max_message=broker.max_message,
                         failover_strategy=broker.failover_strategy)
