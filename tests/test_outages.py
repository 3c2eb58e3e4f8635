"""Outages of the services the bus depends on, on instances the tests start themselves.

The shared RabbitMQ and PostgreSQL are never stopped: a private PostgreSQL (store outage) and a
private RabbitMQ node (broker crash) are started on other ports for these tests.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest

from integration_bus.envelope import Envelope
from integration_bus.errors import BusError
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from tests.conftest import write_config
from tests.support.probe import Target, probe_plugin, registry_with, running, wait_for
from tests.support.services import PrivatePostgres, PrivateRabbitMQ

pytestmark = [pytest.mark.slow, pytest.mark.faults]

OUTAGE_SECONDS = 30.0


def make_bus(tmp_path: Path, broker_url: str, store_url: str, sink: str,
             target: Target | None = None) -> Bus:
    config_dir = write_config(tmp_path, f"""
        broker: {{url: "{broker_url}", prefetch: 200, batch_size: 50}}
        store: {{url: "{store_url}"}}
        sinks:
          out: {sink}
        routes:
          orders: {{from: [order.created], to: [out], retry: {{max_attempts: 3}}}}
        """)
    registry = registry_with(probe_plugin(target or Target()))
    return Bus(load_config(config_dir, registry, {}), registry=registry).open()


@pytest.mark.rabbitmq
def test_store_outage_pauses_the_worker_and_loses_nothing(tmp_path: Path,
                                                          rabbitmq_url: str) -> None:
    target = Target()
    # the sink holds its 101st effect until the store is down: messages are still flowing
    # then (else the worker could deliver all 300 before the server stops, and sit idle)
    store_down = threading.Event()
    target.before_effect = lambda effects: effects < 100 or store_down.wait(30)
    with PrivatePostgres(tmp_path / "pg") as pg:
        bus = make_bus(tmp_path, rabbitmq_url, pg.url, "{connector: probe}", target)
        publisher = bus.publisher()
        first = [Envelope.create("order.created", {"n": i}, source="t") for i in range(300)]
        later = [Envelope.create("order.created", {"n": i}, source="t") for i in range(300, 600)]
        worker = bus.worker()
        try:
            assert publisher.publish_many(first) == [None] * 300
            with running(worker.run):
                wait_for(lambda: target.count() >= 100, message="deliveries before the outage")
                # Given the store goes away while messages flow
                pg.stop()
                store_down.set()
                wait_for(lambda: worker.state.paused, timeout=30, message="worker paused")
                effects_at_pause = target.count()
                assert publisher.publish_many(later) == [None] * 300  # the broker is fine
                # When it stays away for 30 s, the worker holds still: no effects, no requeues
                outage_ends = time.monotonic() + OUTAGE_SECONDS
                while time.monotonic() < outage_ends:
                    assert worker.state.paused and target.count() == effects_at_pause
                    time.sleep(0.25)
                pg.start()
                # Then it resumes by itself and everything arrives exactly once
                wait_for(lambda: target.count() == 600, timeout=60, message="all 600 delivered")
            assert worker.state.events == ["paused", "resumed"]
            assert target.duplicates() == {}
            assert bus.store.dead_letters() == []
            assert bus.store.count_events("delivered", route="orders") == 600
            received = [e for env in first[:50] + later[:50]
                        for e in bus.store.journal_for(env.id) if e["event"] == "received"]
            # nothing was handed back to the broker, so no delivery counts were burnt
            assert all(e["detail"]["delivery_count"] == 0 for e in received)
        finally:
            publisher.close()
            bus.close()


def test_broker_crash_loses_no_confirmed_message(tmp_path: Path) -> None:
    with PrivateRabbitMQ(tmp_path / "rabbit") as rabbit:
        out = tmp_path / "var" / "out.jsonl"
        bus = make_bus(tmp_path, rabbit.url, "sqlite:///var/bus.db",
                       "{connector: jsonl, path: var/out.jsonl}")
        envelopes = [Envelope.create("order.created", {"n": i}, source="t") for i in range(3000)]
        confirmed: set[str] = set()
        failures: list[BusError] = []
        stop_publishing = threading.Event()
        killed = threading.Event()

        def publish() -> None:
            # A source: re-publishes what was not confirmed (so duplicates can reach the bus)
            publisher = bus.publisher()
            pending = list(envelopes)
            while pending and not stop_publishing.is_set():
                # keep at most ~500 ahead of the worker: the source still has work when the
                # broker dies (a fast publisher would otherwise be done before the crash); once
                # it is dead, publish on (the worker delivers nothing more: waiting for it here
                # would keep the publisher from ever noticing)
                while (len(confirmed) - len(delivered_keys()) > 500 and not killed.is_set()
                       and not stop_publishing.wait(0.02)):
                    pass
                window, pending = pending[:100], pending[100:]
                outcomes = publisher.publish_many(window)
                failed = [e for e, o in zip(window, outcomes, strict=True) if o is not None]
                confirmed.update(e.idempotency_key for e, o in zip(window, outcomes,
                                                                  strict=True) if o is None)
                if failed:
                    failures.extend(o for o in outcomes if o is not None)
                    pending = failed + pending
                    stop_publishing.wait(0.2)
            publisher.close()

        def delivered_keys() -> list[str]:
            if not out.exists():
                return []
            return [orjson.loads(line)["idempotency_key"]
                    for line in out.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]

        producer = threading.Thread(target=publish, daemon=True)
        try:
            with running(bus.worker().run):
                producer.start()
                wait_for(lambda: len(delivered_keys()) >= 800, timeout=60,
                         message="flow before the crash")
                # Given the broker node dies hard mid-flow
                rabbit.kill()
                killed.set()
                wait_for(lambda: bool(failures), timeout=30, message="publisher noticed")
                rabbit.start()
                # Then publishers and workers reconnect on their own and nothing confirmed is lost
                producer.join(180)
                assert not producer.is_alive()
                wait_for(lambda: len(set(delivered_keys())) == 3000, timeout=120,
                         message="all 3000 delivered")
        finally:
            stop_publishing.set()
            bus.close()
        keys = delivered_keys()
        assert confirmed == {e.idempotency_key for e in envelopes}
        assert len(keys) == len(set(keys)) == 3000  # re-published duplicates had no effect
