"""The test kit's running bus: ``join()`` waits until idle and re-raises a dead letter's error."""

from __future__ import annotations

import threading
import traceback
from pathlib import Path

import pytest

from integration_bus.batch import Batch
from integration_bus.connector import Envelope, PermanentError, Publisher
from integration_bus.runtime import Bus
from integration_bus.testing import DeadLettered, bus_running, harness, open_bus
from integration_bus.testing.pytest_plugin import StartBus
from tests.support.probe import Target, probe_plugin, registry_with

CONFIG = """\
{broker}
store: {{url: "sqlite:///var/bus.db"}}
sinks: {{probe: {{connector: probe}}}}
routes:
  orders:
    from: ["order.*"]
    to: [probe]
    retry: {{max_attempts: 4, initial_delay: 100ms, max_delay: 100ms}}
"""


def _config(broker_url: str | None) -> str:
    return CONFIG.format(broker=f'broker: {{url: "{broker_url}", retry_tiers: [100ms]}}'
                         if broker_url else "")


def _publish(publisher: Publisher, *envelopes: Envelope) -> None:
    try:
        assert publisher.publish_many(list(envelopes)) == [None] * len(envelopes)
    finally:
        publisher.close()


def _order(n: int, **payload: object) -> Envelope:
    return Envelope.create("order.created", {"n": n, **payload}, source="test",
                           idempotency_key=f"order-{n}")


@pytest.fixture(params=["embedded", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "embedded":
        return None
    return str(request.getfixturevalue("rabbitmq_url"))


def test_join_returns_once_every_message_is_delivered(running_bus: StartBus,
                                                      broker_url: str | None) -> None:
    # Given a running bus (embedded or on RabbitMQ) and a sink that fails twice per message
    target = Target()
    running = running_bus(_config(broker_url), registry=registry_with(probe_plugin(target)))
    # When ten orders are published and the test joins
    _publish(running.bus.publisher(), *(_order(n, fail_times=2) for n in range(10)))
    running.join(timeout=60)
    # Then every one was delivered (after its retries) by the time join returned
    assert target.count() == 10 and target.duplicates() == {}


def test_join_re_raises_the_error_of_the_first_dead_letter(running_bus: StartBus,
                                                           broker_url: str | None) -> None:
    # Given a running bus whose sink refuses one order permanently
    target = Target()
    running = running_bus(_config(broker_url), registry=registry_with(probe_plugin(target)))
    _publish(running.bus.publisher(), _order(1), _order(2, permanent=True))
    # When the test joins, it gets the sink's own exception, raised where the sink raised it
    with pytest.raises(PermanentError, match="invalid store code") as raised:
        running.join(timeout=60)
    frames = traceback.extract_tb(raised.value.__traceback__)
    assert any(frame.filename.endswith("probe.py") and frame.name == "deliver"
               for frame in frames), [f"{f.filename}:{f.name}" for f in frames]
    # And without fail_fast it waits until idle and returns
    running.join(timeout=60, fail_fast=False)
    assert target.count() == 1 and len(running.dead) == 1


def test_join_re_raises_the_sinks_error_even_when_the_stored_letter_shows_first(
        running_bus: StartBus, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a worker that reports its batch only after join() has seen the stored dead letter
    # (a lane reports a batch after its settlement committed: under load, join() saw the
    # letter first and raised DeadLettered instead of the sink's error)
    letter_seen = threading.Event()
    counted = harness._letter_count

    def letter_count(bus: Bus) -> int:
        count = counted(bus)
        if count:
            letter_seen.set()
        return count

    reported = harness.RunningBus._on_batch

    def report_late(self: harness.RunningBus, batch: Batch) -> None:
        if any(item.error is not None for item in batch.items):
            assert letter_seen.wait(30), "join() never looked at the store"
        reported(self, batch)

    monkeypatch.setattr(harness, "_letter_count", letter_count)
    monkeypatch.setattr(harness.RunningBus, "_on_batch", report_late)
    running = running_bus(_config(None), registry=registry_with(probe_plugin(Target())))
    _publish(running.bus.publisher(), _order(1, permanent=True))
    # When the test joins, Then it still gets the sink's own exception
    with pytest.raises(PermanentError, match="invalid store code"):
        running.join(timeout=60)


def test_join_reports_a_dead_letter_raised_elsewhere_with_its_stored_error(
        running_bus: StartBus) -> None:
    # Given a running embedded bus, and a source that rejected a line it could not read
    running = running_bus(_config(None), registry=registry_with(probe_plugin(Target())))
    running.bus.reject("importer", b"not json", PermanentError("line 3 is not JSON"),
                       {"file": "in.jsonl", "line": 3})
    # When the test joins, the stored error is the failure
    with pytest.raises(DeadLettered, match="line 3 is not JSON"):
        running.join(timeout=30)


def test_bus_running_stops_every_thread_on_leaving_the_block(tmp_path: Path) -> None:
    # Given a bus started by the context manager
    bus = open_bus(_config(None), root=tmp_path, registry=registry_with(probe_plugin(Target())))
    try:
        with bus_running(bus) as running:
            _publish(bus.publisher(), _order(1))
            running.join()
        # Then leaving the block stopped every thread
        assert running.stop_event.is_set()
        assert running.alive() == []
    finally:
        bus.close()
