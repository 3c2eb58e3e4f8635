"""Both transports pass the kit's TransportContract: embedded (the store's queue table) and
RabbitMQ (a fresh vhost of the shared broker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from integration_bus.store import Store
from integration_bus.testing import TransportContract
from integration_bus.transport import EmbeddedTransport, Transport
from integration_bus.transport.amqp import AmqpTransport


class TestEmbeddedTransport(TransportContract):
    @pytest.fixture
    def transport(self, tmp_path: Path) -> Iterator[Transport]:
        store = Store.open(f"sqlite:///{tmp_path / 'bus.db'}", root=tmp_path)
        transport = EmbeddedTransport(lambda: store.queue)
        try:
            yield transport
        finally:
            transport.close()
            store.close()


@pytest.mark.rabbitmq
class TestRabbitMqTransport(TransportContract):
    @pytest.fixture
    def transport(self, rabbitmq_url: str) -> Iterator[Transport]:
        transport = AmqpTransport(rabbitmq_url, connect_timeout=5.0)
        try:
            yield transport
        finally:
            transport.close()
