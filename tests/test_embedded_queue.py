"""The embedded transport on the store's queue table: durable, bounded, crash-safe (no I/O
beyond a SQLite file; the kill -9 experiment is tests/test_embedded_crash.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration_bus.envelope import Envelope
from integration_bus.errors import PublishNacked, UnpublishableError, UnroutableError
from integration_bus.liveness import process_identity
from integration_bus.store import Store
from integration_bus.topology import RouteBinding, Topology, route_queue
from integration_bus.transport import EmbeddedTransport
from tests.support.probe import wait_for

QUEUE = route_queue("sales")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 'bus.db'}")
    yield opened
    opened.close()


def _transport(store: Store, **options: float) -> EmbeddedTransport:
    transport = EmbeddedTransport(lambda: store.queue, **options)  # type: ignore[arg-type]
    transport.declare(Topology(routes=(RouteBinding("sales", ("pos.#",), 20),)))
    return transport


def _sales(count: int, start: int = 0) -> list[Envelope]:
    return [Envelope.create("pos.sale_line", {"n": start + i}, source="t") for i in range(count)]


def test_published_messages_are_in_the_store_and_consumed_once(store: Store) -> None:
    transport = _transport(store)
    publisher = transport.publisher()
    assert publisher.publish_many(_sales(5)) == [None] * 5
    assert transport.queue_stats(QUEUE).messages == 5  # type: ignore[union-attr]
    # a second transport on the same store (another process, after a restart) sees them
    consumer = _transport(store).consumer([QUEUE], prefetch=3)
    first = consumer.fetch(10, timeout=1)
    assert len(first) == 3  # the prefetch
    consumer.ack(first)
    rest = consumer.fetch(10, timeout=1)
    assert [Envelope.from_json(d.body).payload["n"] for d in first + rest] == [0, 1, 2, 3, 4]
    consumer.ack(rest)
    assert store.queue.depth() == 0 and consumer.fetch(10, timeout=0.05) == []


def test_claims_of_a_dead_process_are_delivered_again_at_once(store: Store) -> None:
    _transport(store).publisher().publish_many(_sales(4))
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait(30)
    host = process_identity().split(":")[0]
    # Given a consumer process that took all four and was killed before acking
    assert len(store.queue.take([QUEUE], f"{host}:{exited.pid}:1:dead", 10, 2**62)) == 4
    # and a live consumer of this process holding nothing
    alive = _transport(store).consumer([QUEUE], prefetch=10)
    # When a new bus starts, its consumer gets them, marked redelivered
    consumer = _transport(store).consumer([QUEUE], prefetch=10)
    taken = consumer.fetch(10, timeout=1)
    assert len(taken) == 4 and all(d.redelivered and d.delivery_count == 1 for d in taken)
    assert alive.fetch(10, timeout=0.05) == []
    # and a consumer that closes without acking gives its claims back
    consumer.close()
    assert len(alive.fetch(10, timeout=1)) == 4


def test_full_queues_hold_the_publisher_back_until_the_worker_makes_room(store: Store) -> None:
    transport = _transport(store, max_queued=10, full_wait=0.2)
    publisher = transport.publisher()
    assert publisher.publish_many(_sales(10)) == [None] * 10
    # a full queue refuses after the wait, with a transient error: the source tries again
    outcomes = publisher.publish_many(_sales(2, 10))
    assert all(isinstance(o, PublishNacked) for o in outcomes)
    assert store.queue.depth() == 10
    # a publisher that waits gets in as soon as the worker acks
    patient = _transport(store, max_queued=10, full_wait=30)
    done: list[list[object]] = []
    waiting = threading.Thread(target=lambda: done.append(
        patient.publisher().publish_many(_sales(2, 10))))  # type: ignore[arg-type]
    waiting.start()
    consumer = transport.consumer([QUEUE], prefetch=5)
    consumer.ack(consumer.fetch(5, timeout=1))
    wait_for(lambda: bool(done), timeout=10, message="the waiting publish went through")
    waiting.join(10)
    assert done == [[None, None]] and store.queue.depth() == 7
    # and retries are never held back (the worker must always be able to hand one back)
    assert publisher.retry_later("sales", _sales(20, 100), 60_000) == [None] * 20
    assert transport.retry_waiting() == 20


def test_unroutable_and_unpublishable_fail_alone(store: Store) -> None:
    transport = EmbeddedTransport(lambda: store.queue, max_message=1024)
    transport.declare(Topology(routes=(RouteBinding("sales", ("pos.#",), 20),)))
    big = Envelope.create("pos.sale_line", {"text": "x" * 2000}, source="t")
    stray = Envelope.create("other.thing", {}, source="t")
    outcomes = transport.publisher().publish_many([*_sales(1), big, stray, *_sales(1, 1)])
    assert outcomes[0] is None and outcomes[3] is None
    assert isinstance(outcomes[1], UnpublishableError) and "1,024-byte" in str(outcomes[1])
    assert isinstance(outcomes[2], UnroutableError)
    assert store.queue.depth() == 2
