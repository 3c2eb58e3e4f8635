"""The core behaviour suite: the same tests on RabbitMQ and in embedded mode (DESIGN §3, §5)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from integration_bus.envelope import Envelope
from integration_bus.errors import MappingError, UnroutableError
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from tests.conftest import write_config
from tests.support.probe import Target, probe_plugin, registry_with, running, wait_for

CONFIG = """
broker:
  url: "{broker}"
  retry_tiers: [100ms, 300ms, 1s]
store:
  url: sqlite:///var/bus.db
sinks:
  probe:
    connector: probe
  relay:
    connector: bus
    type: order.accepted
routes:
  orders:
    from: [order.*]
    pipeline: {pipeline}
    to: [probe]
    retry: {{max_attempts: 3, initial_delay: 100ms, multiplier: 3, max_delay: 1s}}
  chain:
    from: [sale.recorded]
    to: [relay]
"""

BusFactory = Callable[..., Bus]


@pytest.fixture(params=["embedded", "rabbitmq"])
def make_bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BusFactory]:
    broker = "" if request.param == "embedded" else request.getfixturevalue("rabbitmq_url")
    buses: list[Bus] = []

    def factory(target: Target, pipeline: str = "null", pipelines: dict | None = None) -> Bus:
        config_dir = write_config(tmp_path, CONFIG.format(broker=broker, pipeline=pipeline))
        registry = registry_with(probe_plugin(target))
        bus = Bus(load_config(config_dir, registry, {}), registry=registry, pipelines=pipelines)
        buses.append(bus.open())
        return bus

    yield factory
    for bus in buses:
        bus.close()


def publish(bus: Bus, envelopes: list[Envelope]) -> None:
    publisher = bus.publisher()
    try:
        outcomes = publisher.publish_many(envelopes)
    finally:
        publisher.close()
    assert outcomes == [None] * len(envelopes)


def test_thousand_envelopes_are_each_delivered_once_and_journaled(make_bus: BusFactory) -> None:
    # Given a route to a sink and 1,000 envelopes published with confirms
    target = Target()
    bus = make_bus(target)
    envelopes = [Envelope.create("order.created", {"n": i}, source="test") for i in range(1000)]
    publish(bus, envelopes)
    # When a worker runs until the sink has seen them all
    with running(bus.worker().run):
        wait_for(lambda: target.count() == 1000, message="1000 deliveries")
    # Then each was delivered exactly once, and the journal says so
    assert target.duplicates() == {}
    assert set(target.effects) == {e.idempotency_key for e in envelopes}
    assert bus.store.count_events("delivered", route="orders") == 1000
    assert bus.store.count_events("received", route="orders") == 1000
    events = [e["event"] for e in bus.store.journal_for(envelopes[500].id)]
    assert events == ["received", "delivered"]
    assert bus.store.dead_letters() == []


def test_transient_failures_retry_with_growing_delay(make_bus: BusFactory) -> None:
    target = Target()
    bus = make_bus(target)
    envelope = Envelope.create("order.created", {"fail_times": 2}, source="test")
    publish(bus, [envelope])
    with running(bus.worker().run):
        wait_for(lambda: target.count() == 1, message="delivery after retries")
    attempts = target.attempts[envelope.idempotency_key]
    assert len(attempts) == 3 and target.effects[envelope.idempotency_key] == 1
    # each retry waited at least its (growing) delay; upper bounds depend on machine load
    first_gap, second_gap = attempts[1] - attempts[0], attempts[2] - attempts[1]
    assert first_gap >= 0.1 and second_gap >= 0.3
    journal = bus.store.journal_for(envelope.id)
    retried = [e for e in journal if e["event"] == "retried"]
    assert [e["detail"]["delay_ms"] for e in retried] == [100, 300]
    assert [e["attempt"] for e in retried] == [0, 1]
    assert journal[-1]["event"] == "delivered" and journal[-1]["attempt"] == 2
    assert bus.store.dead_letters() == []


def test_permanent_failure_is_one_dead_letter_with_full_context(make_bus: BusFactory) -> None:
    target = Target()
    bus = make_bus(target)
    envelope = Envelope.create("order.created", {"permanent": True}, source="test",
                               headers={"source_ref": {"file": "orders.jsonl", "line": 7}})
    publish(bus, [envelope])
    with running(bus.worker().run):
        wait_for(lambda: len(bus.store.dead_letters()) == 1, message="a dead letter")
    (letter,) = bus.store.dead_letters()
    assert letter["envelope_id"] == envelope.id
    assert letter["route"] == "orders" and letter["sink"] == "probe"
    assert letter["error_type"] == "PermanentError" and letter["reason"] == "error"
    assert "invalid store code" in letter["message"]
    assert "PermanentError" in letter["traceback"]
    assert letter["envelope"]["payload"] == {"permanent": True}
    assert letter["source_ref"] == {"file": "orders.jsonl", "line": 7}
    assert [a["attempt"] for a in letter["attempts"]] == [0]  # dead-lettered at once
    assert len(target.attempts[envelope.idempotency_key]) == 1


def test_exhausted_retries_dead_letter_with_attempt_history(make_bus: BusFactory) -> None:
    target = Target()
    bus = make_bus(target)
    envelope = Envelope.create("order.created", {"boom": True}, source="test")
    publish(bus, [envelope])
    with running(bus.worker().run):
        wait_for(lambda: len(bus.store.dead_letters()) == 1, message="a dead letter")
    (letter,) = bus.store.dead_letters()
    assert letter["error_type"] == "RuntimeError"
    assert letter["message"].startswith("gave up after 3 attempt(s)")
    assert [a["attempt"] for a in letter["attempts"]] == [0, 1, 2]
    assert len(target.attempts[envelope.idempotency_key]) == 3


def test_repeated_idempotency_key_has_one_effect(make_bus: BusFactory) -> None:
    target = Target()
    bus = make_bus(target)
    first = Envelope.create("order.created", {"n": 1}, source="test", idempotency_key="K-1")
    again = Envelope.create("order.created", {"n": 1}, source="test", idempotency_key="K-1")
    publish(bus, [first])
    with running(bus.worker().run):
        wait_for(lambda: target.count() == 1, message="first delivery")
        publish(bus, [again])
        wait_for(lambda: bus.store.count_events("duplicate") == 1, message="duplicate record")
    assert target.effects == {"K-1": 1}


def test_unroutable_publish_is_an_error(make_bus: BusFactory) -> None:
    bus = make_bus(Target())
    publisher = bus.publisher()
    try:
        with pytest.raises(UnroutableError, match=r"no queue takes message type 'refund\.created'"):
            publisher.publish(Envelope.create("refund.created", {}, source="test"))
        outcomes = publisher.publish_many([Envelope.create("order.created", {}, source="t"),
                                           Envelope.create("nobody.cares", {}, source="t")])
    finally:
        publisher.close()
    assert outcomes[0] is None and isinstance(outcomes[1], UnroutableError)


class FailingPipeline:
    name = "orders_to_canonical"
    version = "sha256:test"

    def __call__(self, envelope: Envelope) -> list[Envelope]:
        if envelope.payload.get("sku") is None:
            raise MappingError("required field is missing", step="map", field="lines[0].sku",
                               path="$.sku")
        return [envelope.derive(type="order.canonical")]


def test_pipeline_error_dead_letters_with_step_and_field(make_bus: BusFactory) -> None:
    target = Target()
    bus = make_bus(target, pipeline="orders_to_canonical",
                   pipelines={"orders_to_canonical": FailingPipeline()})
    good = Envelope.create("order.created", {"sku": "A-1"}, source="test")
    bad = Envelope.create("order.created", {"qty": 1}, source="test")
    publish(bus, [good, bad])
    with running(bus.worker().run):
        wait_for(lambda: target.count() == 1 and len(bus.store.dead_letters()) == 1,
                 message="one delivery and one dead letter")
    (letter,) = bus.store.dead_letters()
    assert letter["envelope_id"] == bad.id and letter["step"] == "map"
    assert letter["error_type"] == "MappingError"
    assert "lines[0].sku" in letter["traceback"]
    (delivered,) = target.envelopes
    assert delivered.type == "order.canonical" and delivered.causation_id == good.id
    journal = bus.store.journal_for(good.id)
    assert journal[0]["mapping_version"] == "sha256:test"


def test_bus_sink_chains_routes_keeping_lineage(make_bus: BusFactory) -> None:
    target = Target()
    bus = make_bus(target)
    sale = Envelope.create("sale.recorded", {"total": "19.99"}, source="pos")
    publish(bus, [sale])
    # 'chain' republishes as order.accepted, which the 'orders' route delivers to the probe
    with running(bus.worker().run):
        wait_for(lambda: target.count() == 1, message="chained delivery")
    (out,) = target.envelopes
    assert out.type == "order.accepted" and out.payload == {"total": "19.99"}
    assert out.correlation_id == sale.correlation_id and out.causation_id == sale.id
    assert out.idempotency_key == f"{sale.idempotency_key}>order.accepted"


def test_a_sale_the_bus_sink_republishes_twice_has_one_effect(make_bus: BusFactory) -> None:
    # The bus sink takes no ledger claim (deduplicated_downstream): a sale that comes back to
    # the chain route (here: published again, as a redelivery after a crash would bring it) is
    # republished, and the next route's ledger absorbs the copy.
    target = Target()
    bus = make_bus(target)
    sale = Envelope.create("sale.recorded", {"total": "5.00"}, source="pos")
    publish(bus, [sale])
    with running(bus.worker().run):
        wait_for(lambda: target.count() == 1, message="chained delivery")
        publish(bus, [sale])
        wait_for(lambda: bus.store.count_events("duplicate", route="orders") == 1,
                 message="the copy recorded as a duplicate one hop later")
    assert target.effects == {f"{sale.idempotency_key}>order.accepted": 1}
    assert bus.store.count_events("delivered", route="chain") == 2
    assert bus.store.ledger_state("relay", f"{sale.idempotency_key}>order.accepted") is None
    assert bus.store.ledger_state("relay", sale.idempotency_key) is None
    assert bus.store.ledger_state("probe", f"{sale.idempotency_key}>order.accepted") == "done"
