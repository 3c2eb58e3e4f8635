"""Embedded mode: the queues are a table of the bus's own store (SQLite under ``var/``).

Why the store and not kombu's memory or SQLAlchemy transport: kombu's memory transport keeps
messages in RAM (a ``kill -9`` lost 60,499 of 100,000 POS records), and its SQLAlchemy
transport hides a fetched message (``visible=False``) until the channel acks or *closes
cleanly*: a killed process leaves it invisible forever. The store's queue
(``store.queue.MessageQueue``) gives what embedded mode needs, with parts we already have:

- **Durable publish.** A publish is an insert; "confirmed" means committed (SQLite WAL), so a
  source archives a file, answers a webhook or moves a cursor only once what it read is on
  disk. Routing is the broker's: topic patterns of ``bus.ingress``, the route name on
  ``bus.requeue``; a message no route takes is an UnroutableError (mandatory publish).
- **Bounded.** Publishes to ``bus.ingress``/``bus.requeue`` wait while ``broker.max_queued``
  messages are queued (back-pressure to the sources); after ``full_wait`` they are refused
  with PublishNacked (a TransientError: the source tries again later, its input untouched).
  Retries are never held back (the worker must always be able to hand a message back).
- **Crash-safe consume.** A consumer claims rows under its process identity (``liveness``);
  ack deletes them. Rows held by a process that died are freed at the next start (and every
  few seconds while running) and delivered again: at-least-once, the ledger keeps effects single.
- **Retry tiers** are rows due later (``due_ms``); nothing waits in memory, so a stop — graceful
  or not — keeps every message where it is.

Publishers and consumers of one transport wake each other through a condition variable (no
polling delay in-process); other processes are seen within ``_POLL`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from integration_bus.envelope import MAX_MESSAGE_BYTES, Envelope, new_id
from integration_bus.errors import BusError, PublishNacked, UnpublishableError, UnroutableError
from integration_bus.liveness import process_identity
from integration_bus.store.queue import MessageQueue
from integration_bus.topology import (
    ATTEMPT_HEADER,
    INGRESS_EXCHANGE,
    REQUEUE_EXCHANGE,
    RETRY_TIER_HEADER,
    Topology,
    format_delay,
    route_queue,
)
from integration_bus.transport.base import Delivery, IngressPublishing, Outgoing, QueueStats

__all__ = ["EmbeddedTransport"]

_POLL = 0.05  # seconds between looks at the table when nothing in this process signalled
_FULL_WAIT = 30.0  # seconds a publish waits for room in a full queue, then PublishNacked
_SWEEP = 5.0  # seconds between looks for claims of dead processes


def _now_ms() -> int:
    return int(time.time() * 1000)


class EmbeddedTransport:
    """Transport on the store's queue table. ``queues`` opens the store lazily (the bus owns
    it); ``max_queued`` bounds what sources may queue."""

    embedded = True

    def __init__(self, queues: Callable[[], MessageQueue], *, max_queued: int = 10_000,
                 max_message: int = MAX_MESSAGE_BYTES, full_wait: float = _FULL_WAIT) -> None:
        self._queues = queues
        self.max_queued = max_queued
        self.full_wait = full_wait
        self.max_message = max_message
        self.topology: Topology | None = None
        self.changed = threading.Condition()
        self._swept = 0.0

    @property
    def table(self) -> MessageQueue:
        return self._queues()

    def signal(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def wait(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)

    def sweep(self, force: bool = False) -> None:
        """Free the claims of dead processes (a crash before this start, or a peer)."""
        if force or time.monotonic() - self._swept > _SWEEP:
            self._swept = time.monotonic()
            if self.table.free_dead():
                self.signal()

    def declare(self, topology: Topology) -> None:
        self.topology = topology
        self.sweep(force=True)

    def queues_for(self, message: Outgoing) -> list[str]:
        if self.topology is None:
            return []
        if message.exchange == INGRESS_EXCHANGE:
            return [route_queue(r) for r in self.topology.routes_for(message.routing_key)]
        if message.exchange == REQUEUE_EXCHANGE:
            names = {b.route for b in self.topology.routes}
            return [route_queue(message.routing_key)] if message.routing_key in names else []
        return []

    def publisher(self) -> EmbeddedPublisher:
        return EmbeddedPublisher(self)

    def consumer(self, queues: Sequence[str], prefetch: int) -> EmbeddedConsumer:
        return EmbeddedConsumer(self, queues, prefetch)

    def queue_stats(self, queue: str) -> QueueStats | None:
        if self.topology is None or queue not in {b.queue for b in self.topology.routes}:
            return None
        return QueueStats(messages=self.table.depth(queue), consumers=0)

    def queue_depths(self, queues: Sequence[str]) -> dict[str, QueueStats | None]:
        return {queue: self.queue_stats(queue) for queue in queues}

    def retry_waiting(self) -> int:
        return self.table.waiting(_now_ms())

    def close(self) -> None:
        """The table lives in the store, which the bus closes."""


class EmbeddedPublisher(IngressPublishing):
    """Publishes into the queue table; 'confirmed' means committed. Thread-confined."""

    def __init__(self, transport: EmbeddedTransport) -> None:
        self._transport = transport

    def send(self, messages: Sequence[Outgoing]) -> list[BusError | None]:
        return self._put(messages, due_ms=0, bounded=True)

    def _put(self, messages: Sequence[Outgoing], *, due_ms: int,
             bounded: bool) -> list[BusError | None]:
        outcomes: list[BusError | None] = []
        rows: list[tuple[str, bytes, Mapping[str, Any] | None, int]] = []
        for message in messages:
            try:  # one that cannot travel fails alone, as on RabbitMQ
                body = message.envelope.encode(self._transport.max_message)
            except UnpublishableError as exc:
                outcomes.append(exc)
                continue
            queues = self._transport.queues_for(message)
            if not queues:
                outcomes.append(UnroutableError(
                    f"no queue takes message type {message.routing_key!r} on "
                    f"{message.exchange}", envelope_id=message.envelope.id,
                    hint="add a route whose 'from' matches this type, or fix the type"))
                continue
            headers = {**message.headers, ATTEMPT_HEADER: message.envelope.attempt}
            rows += [(queue, body, headers, due_ms) for queue in queues]
            outcomes.append(None)
        if rows:
            if bounded and not self._room(len(rows)):
                full = PublishNacked(f"the embedded queue holds {self._transport.max_queued:,} "
                                     "messages or more: try again later",
                                     hint="raise broker.max_queued, or let the worker catch up")
                return [full if outcome is None else outcome for outcome in outcomes]
            self._transport.table.put(rows)
            self._transport.signal()
        return outcomes

    def _room(self, adding: int) -> bool:
        """Wait (up to ``full_wait``) until the queues hold fewer than ``max_queued``."""
        deadline = time.monotonic() + self._transport.full_wait
        limit = self._transport.max_queued
        while self._transport.table.depth() + adding > limit and adding <= limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._transport.wait(min(remaining, _POLL))
        return True

    def retry_later(self, route: str, envelopes: Sequence[Envelope],
                    delay_ms: int) -> list[BusError | None]:
        headers = {RETRY_TIER_HEADER: format_delay(delay_ms)}
        return self._put([Outgoing(REQUEUE_EXCHANGE, route, e, headers) for e in envelopes],
                         due_ms=_now_ms() + delay_ms, bounded=False)

    def close(self) -> None:
        """Nothing held: each publish is its own transaction."""


class EmbeddedConsumer:
    """Claims due rows of its queues up to ``prefetch`` unacked; ack deletes them. Rows still
    held at ``close()`` are given back (a crash leaves them to :meth:`EmbeddedTransport.sweep`).
    Thread-confined."""

    def __init__(self, transport: EmbeddedTransport, queues: Sequence[str],
                 prefetch: int) -> None:
        self._transport = transport
        self._queues = list(queues)
        self._paused: set[str] = set()
        self._prefetch = prefetch
        self._held: set[int] = set()
        self._consuming = True
        self.name = f"{process_identity()}:{new_id()[-8:].lower()}"
        transport.sweep(force=True)

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            self._transport.sweep()
            batch = self._take(max_count)
            if batch or time.monotonic() >= deadline:
                return batch
            self._transport.wait(min(_POLL, max(0.0, deadline - time.monotonic())))

    def _take(self, max_count: int) -> list[Delivery]:
        room = min(max_count, self._prefetch - len(self._held))
        queues = [q for q in self._queues if q not in self._paused]
        if not self._consuming or room <= 0 or not queues:
            return []
        taken = self._transport.table.take(queues, self.name, room, _now_ms())
        self._held.update(m.id for m in taken)
        return [Delivery(body=m.body, queue=m.queue, redelivered=m.deliveries > 1,
                         delivery_count=m.deliveries - 1, headers=m.headers, tag=m.id, raw=None)
                for m in taken]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        ids = [d.tag for d in deliveries]
        self._transport.table.ack(ids)
        self._held.difference_update(ids)
        self._transport.signal()  # room for a waiting publisher

    def pause(self, queue: str) -> None:
        self._paused.add(queue)

    def resume(self, queue: str) -> None:
        self._paused.discard(queue)

    def stop_consuming(self) -> None:
        self._consuming = False

    def keepalive(self, timeout: float) -> None:
        """Nothing to keep alive in-process; just let the time pass."""
        threading.Event().wait(timeout)

    def read_ahead(self, max_count: int, wait: float, wake: Sequence[int] = ()) -> bool:
        """Rows are claimed by :meth:`fetch` itself: nothing to read ahead."""
        return False

    def take_read(self, max_count: int) -> list[Delivery]:
        """Nothing is ever read ahead (see :meth:`read_ahead`)."""
        return []

    def set_prefetch(self, count: int) -> None:
        self._prefetch = count

    def close(self) -> None:
        if self._held:
            self._transport.table.release(self.name)
            self._held.clear()
            self._transport.signal()
