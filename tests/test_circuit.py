"""An open circuit breaker holds messages in their queue: no attempts or delivery counts burnt."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from integration_bus.connector import ConnectorContext, ConnectorPlugin, Envelope
from integration_bus.errors import CircuitOpen
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from tests.conftest import write_config
from tests.support.probe import registry_with, running, wait_for


class Outage:
    """A target that is down until ``ends`` and counts every call made while it is."""

    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.calls_while_open = 0
        self.effects: dict[str, int] = {}


class GuardedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GuardedSink:
    """A sink whose breaker is open during the outage (it refuses without calling out)."""

    def __init__(self, context: ConnectorContext, outage: Outage) -> None:
        self.name = context.instance
        self._outage = outage

    def deliver(self, envelope: Envelope) -> None:
        remaining = self._outage.ends - time.monotonic()
        with self._outage.lock:
            if remaining > 0:
                self._outage.calls_while_open += 1
                raise CircuitOpen("the ERP circuit is open", endpoint="erp",
                                  retry_after_ms=int(remaining * 1000) + 1)
            key = envelope.idempotency_key
            self._outage.effects[key] = self._outage.effects.get(key, 0) + 1

    def close(self) -> None:
        pass


@pytest.mark.parametrize("mode", ["embedded", "rabbitmq"])
def test_open_circuit_pauses_the_route_without_burning_attempts(
        tmp_path: Path, mode: str, request: pytest.FixtureRequest) -> None:
    url = "" if mode == "embedded" else request.getfixturevalue("rabbitmq_url")
    outage = Outage(seconds=1.5)
    plugin = ConnectorPlugin(name="guarded", summary="test", sink_config=GuardedConfig,
                             create_sink=lambda cfg, ctx: GuardedSink(ctx, outage))
    config_dir = write_config(tmp_path, f"""
        broker: {{url: "{url}", retry_tiers: [100ms, 500ms, 1s, 5s], batch_size: 50}}
        store: {{url: sqlite:///var/bus.db}}
        sinks: {{erp: {{connector: guarded}}}}
        routes:
          postings: {{from: [stock.adjusted], to: [erp], retry: {{max_attempts: 2}}}}
        """)
    registry = registry_with(plugin)
    with Bus(load_config(config_dir, registry, {}), registry=registry) as bus:
        publisher = bus.publisher()
        envelopes = [Envelope.create("stock.adjusted", {"n": i}, source="t") for i in range(300)]
        assert publisher.publish_many(envelopes) == [None] * 300
        publisher.close()
        with running(bus.worker().run):
            wait_for(lambda: len(outage.effects) == 300, timeout=60, message="all delivered")
        # With max_attempts 2, counting attempts would have dead-lettered them: none was
        assert bus.store.dead_letters() == []
        assert all(n == 1 for n in outage.effects.values())
        # the route paused: after the first refusal the sink was left alone until the probe
        assert 1 <= outage.calls_while_open <= 3
        assert bus.store.count_events("held", route="postings") >= outage.calls_while_open
        assert bus.store.count_events("retried", route="postings") == 0
        from integration_bus.store.schema import journal

        with bus.store.db.begin() as conn:
            attempts = {row.attempt for row in conn.execute(
                journal.select().where(journal.c.event == "delivered"))}
        assert attempts == {0}  # no attempt was counted while the circuit was open


@pytest.mark.rabbitmq
def test_a_flapping_route_does_not_pile_up_consumer_callbacks(
        tmp_path: Path, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import integration_bus.transport.amqp_consume as amqp_consume

    config_dir = write_config(tmp_path, f"""
        broker: {{url: "{rabbitmq_url}"}}
        store: {{url: sqlite:///var/bus.db}}
        sinks: {{out: {{connector: jsonl, path: var/out.jsonl}}}}
        routes:
          orders: {{from: [order.created], to: [out]}}
        """)
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        consumer = bus.transport.consumer(["bus.route.orders"], 10)
        try:
            channel = consumer._channel  # type: ignore[attr-defined]
            tags = consumer._tags  # type: ignore[attr-defined]  # consumer tag -> queue
            callbacks, base = len(channel.callbacks), len(tags)
            for _ in range(20):  # a breaker opening and closing
                consumer.pause("bus.route.orders")
                consumer.resume("bus.route.orders")
            # Cancelled consumers' tags are kept a while (their late deliveries are buffered,
            # not rejected back to the queue) ...
            assert len(tags) == base + 20
            consumer.fetch(1, 0)
            assert len(tags) == base + 20
            # ... and are forgotten once that while has passed
            monkeypatch.setattr(amqp_consume, "KEEP_CANCELLED", 0.0)
            consumer.fetch(1, 0)
            assert len(tags) == base
            assert len(channel.callbacks) == callbacks  # py-amqp's own map never grew
        finally:
            consumer.close()
