"""Transports: RabbitMQ (``amqp``, kombu) and embedded mode's queues in the store (``embedded``)."""

from __future__ import annotations

from collections.abc import Callable

from integration_bus.settings.models import BrokerSettings
from integration_bus.store.queue import MessageQueue
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
    "open_transport",
]


def open_transport(broker: BrokerSettings, queues: Callable[[], MessageQueue]) -> Transport:
    """RabbitMQ when ``broker.url`` is set, else the embedded transport on the store's queue
    table (``queues``: the store's, opened when first used)."""
    if broker.url is None:
        return EmbeddedTransport(queues, max_queued=broker.max_queued,
                                 max_message=broker.max_message)
    from integration_bus.transport.amqp import AmqpTransport

    return AmqpTransport(broker.url, heartbeat=broker.heartbeat,
                         connect_timeout=broker.connect_timeout / 1000,
                         confirm_window=broker.confirm_window, max_message=broker.max_message,
                         failover_strategy=broker.failover_strategy)
