"""Broker failover: a ';' list of broker URLs, the clients connect to the first node that answers.

(The 3-node cluster with a node killed under load is ``tests/test_cluster.py``, ``-m cluster``.)
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from integration_bus.connector import ConnectorContext, ConnectorPlugin, Envelope
from integration_bus.errors import BrokerUnavailable, ConfigError
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from integration_bus.tracing import Tracing
from integration_bus.transport.amqp import AmqpTransport
from tests.conftest import write_config
from tests.support.probe import registry_with, running, wait_for


def dead_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CountConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Counting:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: dict[str, int] = {}


class CountingSink:
    def __init__(self, context: ConnectorContext, counts: Counting) -> None:
        self.name = context.instance
        self._counts = counts

    def deliver(self, envelope: Envelope) -> None:
        with self._counts.lock:
            key = envelope.idempotency_key
            self._counts.keys[key] = self._counts.keys.get(key, 0) + 1

    def close(self) -> None:
        pass


@pytest.mark.rabbitmq
def test_clients_skip_a_dead_node_of_the_list(tmp_path: Path, rabbitmq_url: str) -> None:
    # Given a broker list whose first node is down and whose second is the real broker
    vhost_part = rabbitmq_url.split("127.0.0.1:5672", 1)[1]
    urls = f"amqp://guest:guest@127.0.0.1:{dead_port()}{vhost_part};{rabbitmq_url}"
    counts = Counting()
    plugin = ConnectorPlugin(name="counting", summary="test", sink_config=CountConfig,
                             create_sink=lambda cfg, ctx: CountingSink(ctx, counts))
    registry = registry_with(plugin)
    config_dir = write_config(tmp_path, f"""
        broker: {{url: "{urls}", connect_timeout: 2s}}
        store: {{url: sqlite:///var/bus.db}}
        sinks: {{erp: {{connector: counting}}}}
        routes: {{postings: {{from: [stock.adjusted], to: [erp]}}}}
        """)
    # When the bus declares, publishes and consumes through it
    with Bus(load_config(config_dir, registry, {}), registry=registry,
             tracing=Tracing.off()) as bus:
        publisher = bus.publisher()
        envelopes = [Envelope.create("stock.adjusted", {"n": i}, source="t") for i in range(50)]
        assert publisher.publish_many(envelopes) == [None] * 50
        publisher.close()
        with running(bus.worker().run):
            wait_for(lambda: len(counts.keys) == 50, timeout=30, message="all delivered")
    # Then every message got through, once
    assert set(counts.keys.values()) == {1}


def test_a_list_with_no_node_answering_is_broker_unavailable() -> None:
    urls = ";".join(f"amqp://guest:guest@127.0.0.1:{dead_port()}//" for _ in range(3))
    transport = AmqpTransport(urls, connect_timeout=1)
    assert transport.nodes == 3
    with pytest.raises(BrokerUnavailable, match="cannot connect to the broker"):
        transport.connect()


def test_an_empty_entry_in_the_list_is_a_config_error(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, """
        broker: {url: "amqp://127.0.0.1:5672//;;amqp://127.0.0.1:5673//"}
        sinks: {out: {connector: log}}
        routes: {r: {from: [a.b], to: [out]}}
        """)
    with pytest.raises(ConfigError, match="empty broker URL"):
        load_config(config_dir, registry_with(), {})
