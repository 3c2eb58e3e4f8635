"""Data that is awkward to store, and fan-out failures: never a lost or wedged message."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from integration_bus.envelope import Envelope
from integration_bus.errors import EnvelopeError
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from integration_bus.store.schema import embedded_queue
from tests.conftest import write_config
from tests.support.probe import Target, probe_plugin, registry_with, running, wait_for


def make_bus(tmp_path: Path, broker: str, store: str, target: Target) -> Bus:
    config_dir = write_config(tmp_path, f"""
        broker: {{url: "{broker}"}}
        store: {{url: "{store}"}}
        sinks:
          erp: {{connector: probe}}
          shop: {{connector: probe}}
        routes:
          to_erp: {{from: [sale.recorded], to: [erp]}}
          to_shop: {{from: [sale.recorded], to: [shop]}}
        """)
    registry = registry_with(probe_plugin(target))
    return Bus(load_config(config_dir, registry, {}), registry=registry).open()


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_nul_characters_become_a_readable_dead_letter_not_a_redelivery_loop(
        tmp_path: Path, rabbitmq_url: str, postgres_url: str) -> None:
    # Given a permanently failing message whose payload has NUL padding (legacy POS files do),
    # which PostgreSQL refuses to store in JSON, among healthy ones
    target = Target()
    bus = make_bus(tmp_path, rabbitmq_url, postgres_url, target)
    healthy = [Envelope.create("sale.recorded", {"n": i}, source="pos") for i in range(20)]
    poison = Envelope.create("sale.recorded", {"permanent": True, "store": "0042\x00\x00"},
                             source="pos")
    publisher = bus.publisher()
    assert publisher.publish_many([*healthy[:10], poison, *healthy[10:]]) == [None] * 21
    publisher.close()
    with running(bus.worker().run):
        wait_for(lambda: len(bus.store.dead_letters()) == 2 and target.count() == 20
                 and set(target.effects.values()) == {2}, timeout=60,
                 message="both routes settled")
    # Then each healthy message reached each of the two sinks exactly once (same key, one
    # effect per sink), and the poison is stored, readable, once per route
    assert sorted(target.effects.values()) == [2] * 20
    letters = bus.store.dead_letters()
    assert {row["route"] for row in letters} == {"to_erp", "to_shop"}
    assert all(row["envelope"]["payload"]["store"] == "0042\ufffd\ufffd" for row in letters)
    bus.close()


@pytest.mark.parametrize("mode", ["embedded", "rabbitmq"])
def test_two_routes_failing_the_same_envelope_keep_both_dead_letters(
        tmp_path: Path, mode: str, request: pytest.FixtureRequest) -> None:
    broker = "" if mode == "embedded" else request.getfixturevalue("rabbitmq_url")
    bus = make_bus(tmp_path, broker, "sqlite:///var/bus.db", Target())
    envelope = Envelope.create("sale.recorded", {"permanent": True}, source="pos")
    publisher = bus.publisher()
    publisher.publish(envelope)
    publisher.close()
    with running(bus.worker().run):
        wait_for(lambda: len(bus.store.dead_letters()) == 2, message="a dead letter per route")
    assert sorted(row["route"] for row in bus.store.dead_letters()) == ["to_erp", "to_shop"]
    bus.close()


def test_over_long_envelope_fields_are_typed_errors() -> None:
    data = Envelope.create("sale.recorded", {}, source="pos").to_dict()
    with pytest.raises(EnvelopeError, match="idempotency_key must be text of at most 480"):
        Envelope.from_dict({**data, "idempotency_key": "k" * 481})
    with pytest.raises(EnvelopeError, match="source must be text of at most 128"):
        Envelope.from_dict({**data, "source": "s" * 129})


def test_embedded_stop_keeps_queued_and_retrying_messages_for_the_next_run(
        tmp_path: Path) -> None:
    # Given an embedded bus stopped while messages wait in a retry delay and in the queue
    target = Target()
    config_dir = write_config(tmp_path, """
        broker: {retry_tiers: [30s]}
        store: {url: sqlite:///var/bus.db}
        sinks: {erp: {connector: probe}}
        routes:
          to_erp: {from: [sale.recorded], to: [erp], retry: {initial_delay: 30s}}
        """)
    registry = registry_with(probe_plugin(target))
    envelopes = [Envelope.create("sale.recorded", {"n": i, "fail_times": 1 if i % 10 == 0
                                                   else 0}, source="pos") for i in range(100)]
    with Bus(load_config(config_dir, registry, {}), registry=registry) as bus:
        publisher = bus.publisher()
        publisher.publish_many(envelopes)
        publisher.close()
        with running(lambda stop: bus.run(stop, sources=[])):
            wait_for(lambda: target.count() == 90 and bus.transport.retry_waiting() == 10)
    # Then the ten wait in the store's queue (embedded queues are durable), still delayed
    with Bus(load_config(config_dir, registry, {}), registry=registry) as bus:
        assert bus.store.queue.depth() == 10 and bus.transport.retry_waiting() == 10
        with bus.store.db.begin() as conn:  # their 30 s delay is over
            conn.execute(update(embedded_queue).values(due_ms=0))
        # When the bus runs again
        with running(lambda stop: bus.run(stop, sources=[])):
            wait_for(lambda: target.count() == 100, message="the parked ten delivered")
    assert target.duplicates() == {}


def test_unroutable_outbox_rows_become_dead_letters_or_go_back_to_new(tmp_path: Path) -> None:
    from integration_bus.relay import OutboxRelay
    from integration_bus.store import DeadLetter, OutboxItem, utcnow
    from integration_bus.topology import INGRESS_EXCHANGE, REQUEUE_EXCHANGE

    bus = make_bus(tmp_path, "", "sqlite:///var/bus.db", Target())
    failed = Envelope.create("sale.recorded", {"n": 1}, source="pos")
    bus.store.add_dead_letters([DeadLetter(id="DL-1", envelope=failed.to_dict(), route="to_erp",
                                           reason="error", error_type="PermanentError",
                                           message="x", failed_at=utcnow())])
    with bus.store.db.begin() as conn:  # as `bus dlq replay --to-route gone` leaves it
        from sqlalchemy import update

        from integration_bus.store.schema import dead_letters
        conn.execute(update(dead_letters).values(status="replaying"))
    staged = Envelope.create("price.changed", {"sku": "A"}, source="erp")
    bus.store.outbox_add([OutboxItem(REQUEUE_EXCHANGE, "gone", failed.replayed(), "DL-1"),
                          OutboxItem(INGRESS_EXCHANGE, "price.changed", staged)], reason="test")
    relay = OutboxRelay(bus.store, bus.publisher)
    assert relay.drain() == 0
    rows = {r["envelope_id"]: r for r in bus.store.dead_letters(status=None)}
    assert rows[failed.id]["status"] == "new"
    assert "replay unroutable" in rows[failed.id]["status_reason"]
    assert rows[staged.id]["reason"] == "unroutable" and rows[staged.id]["route"] is None
    assert bus.store.outbox_waiting() == 0
    bus.close()


@pytest.mark.rabbitmq
def test_a_publisher_idle_past_its_heartbeat_still_publishes(rabbitmq_url: str) -> None:
    import threading

    from integration_bus.topology import RouteBinding, Topology
    from integration_bus.transport.amqp import AmqpTransport

    transport = AmqpTransport(rabbitmq_url, heartbeat=1)
    transport.declare(Topology(routes=(RouteBinding("r", ("x.y",), 5),), retry_tiers_ms=(1000,)))
    publisher = transport.publisher()
    try:
        assert publisher.publish_many([Envelope.create("x.y", {}, source="t")]) == [None]
        threading.Event().wait(3.5)  # the scenario: idle past two heartbeat intervals
        assert publisher.publish_many([Envelope.create("x.y", {}, source="t")]) == [None]
    finally:
        publisher.close()
