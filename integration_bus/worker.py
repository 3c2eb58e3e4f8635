"""The worker: consume route queues, run the pipeline, deliver to sinks, then settle and ack.

A batch of deliveries goes through these steps (``docs/lifecycle.md`` has the full picture):

1. decode envelopes, run each route's pipeline (pure: can be redone after a pause);
2. claim every (sink, idempotency key) in the ledger — one transaction;
3. deliver: claimed → sink; done → duplicate; in doubt (our own claim, redelivered after a crash)
   → ask a LookupSink first; busy (another copy in progress) → retry later;
4. settle — journal, ledger outcomes, dead letters — in one transaction;
5. hand failed-but-retryable envelopes to a retry tier (publisher-confirmed);
6. ack the whole batch.

A crash anywhere before 6 leaves the messages unacked: the broker redelivers them and the
ledger keeps effects single. While the store is unreachable the worker holds its batch and stops
taking messages (no requeue loop burns delivery counts) until a ping succeeds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from integration_bus.batch import Batch
from integration_bus.errors import BrokerUnavailable, StoreUnavailable
from integration_bus.metrics import Metrics
from integration_bus.route import Route
from integration_bus.store import Store
from integration_bus.topology import DEAD_LETTER_QUEUE, Topology, route_queue
from integration_bus.tracing import Tracing
from integration_bus.transport import Consumer, Delivery, Transport, TransportPublisher
from integration_bus.transport.traced import TracedPublisher

__all__ = ["Worker", "WorkerOptions"]

log = structlog.get_logger("integration_bus.worker")


@dataclass(frozen=True)
class WorkerOptions:
    batch_size: int = 100
    prefetch: int = 200
    claim_lease: timedelta = timedelta(minutes=5)
    store_probe_interval: float = 1.0
    reconnect_max_delay: float = 10.0
    fetch_timeout: float = 0.25
    archive_dead_letters: bool = True
    drain_timeout: float = 10.0  # graceful stop: reading late deliveries ends by then


@dataclass
class WorkerState:
    """What the worker is doing, for status, tests and metrics."""

    paused: bool = False
    connected: bool = False
    batches: int = 0
    handled: int = 0
    last_error: str | None = None
    events: list[str] = field(default_factory=list)


def _oldest_per_route(batch: Batch) -> dict[str, datetime]:
    """Per route, when the oldest envelope of ``batch`` was created (one pass, no I/O)."""
    oldest: dict[str, datetime] = {}
    for item in batch.items:
        if item.envelope is not None:
            name, created = item.route.name, item.envelope.created_at
            if name not in oldest or created < oldest[name]:
                oldest[name] = created
    return oldest


class Worker:
    """Consumes the queues of ``routes`` (plus ``bus.dead-letters`` when archiving) until
    ``stop`` is set. Thread-confined; build one per thread or process."""

    def __init__(self, transport: Transport, store: Store, routes: Sequence[Route],
                 topology: Topology, *, metrics: Metrics | None = None,
                 options: WorkerOptions | None = None,
                 on_batch: Callable[[Batch], None] | None = None,
                 tracing: Tracing | None = None) -> None:
        self.transport = transport
        #: None unless tracing is on: the batch loop then skips every tracing call
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.store = store
        self.routes = {route.queue: route for route in routes}
        self.topology = topology
        self.metrics = metrics or Metrics()
        self.options = options or WorkerOptions()
        self.state = WorkerState()
        self._on_batch = on_batch
        self._consumer: Consumer | None = None
        self._publisher: TransportPublisher | None = None
        self._cautious = True  # prefetch 1 until a fresh (not redelivered) message shows up
        self._paused: dict[str, float] = {}  # queue -> monotonic time to resume (open circuits)

    # -- lifecycle -------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; then finish in-flight messages, ack, and return."""
        delay = 0.5
        while not stop.is_set():
            try:
                self._connect()
                delay = 0.5
                self._resume_due()
                deliveries = self._consumer.fetch(  # type: ignore[union-attr]
                    1 if self._cautious else self.options.batch_size,
                    self.options.fetch_timeout)
                if deliveries:
                    self._handle(deliveries, stop)
            except BrokerUnavailable as exc:
                self._disconnect(f"broker unavailable: {exc}")
                stop.wait(delay)
                delay = min(delay * 2, self.options.reconnect_max_delay)
            except Exception as exc:  # a bug in the bus itself, not in a sink or pipeline
                # Drop the connection so the batch is redelivered (its delivery count rises,
                # and a message that triggers this every time ends as a delivery_limit dead
                # letter instead of wedging the worker).
                log.exception("worker.crashed", error=f"{type(exc).__name__}: {exc}")
                self._disconnect(f"{type(exc).__name__}: {exc}")
                stop.wait(delay)
                delay = min(delay * 2, self.options.reconnect_max_delay)
        self._finish(stop)

    def _connect(self) -> None:
        if self._consumer is not None:
            return
        queues = list(self.routes)
        if self.options.archive_dead_letters and not self.transport.embedded:
            queues.append(DEAD_LETTER_QUEUE)
        self._publisher = self.transport.publisher()
        if self.tracing is not None:
            self._publisher = TracedPublisher(self._publisher, self.tracing)
        self._cautious = not self.transport.embedded
        prefetch = 1 if self._cautious else self.options.prefetch
        self._consumer = self.transport.consumer(queues, prefetch)
        self.state.connected = True
        log.info("worker.consuming", queues=queues)

    def _disconnect(self, reason: str | None = None) -> None:
        if reason:
            self.state.last_error = reason
            log.warning("worker.disconnected", reason=reason)
        for part in (self._consumer, self._publisher):
            if part is not None:
                part.close()
        self._consumer = self._publisher = None
        self.metrics.flow.settled(id(self))  # unacked: back in the broker's hands
        self._paused.clear()  # a new connection consumes every queue; holds start over
        self.state.connected = False

    def _finish(self, stop: threading.Event) -> None:
        # Deliveries already buffered or under way are handled rather than returned (returning
        # them would count against their delivery limit): stop_consuming takes in what the
        # queue assigned to this consumer before cancelling, and a delivery that still comes
        # after the cancel is read here, until the connection stays quiet (within a deadline).
        if self._consumer is not None:
            try:
                self._consumer.stop_consuming()
                deadline = time.monotonic() + self.options.drain_timeout
                while True:
                    # Everything buffered is handled however long it takes; the deadline only
                    # bounds waiting for deliveries still on their way.
                    wait = 0.3 if time.monotonic() < deadline else 0.0
                    rest = self._consumer.fetch(self.options.batch_size, wait)
                    if not rest:
                        break
                    self._handle(rest, stop)
            except BrokerUnavailable:
                pass
        self._disconnect()
        closed: set[int] = set()
        for route in self.routes.values():
            for sink in route.sinks:
                if id(sink) not in closed:
                    closed.add(id(sink))
                    sink.close()

    # -- one batch -------------------------------------------------------------------------------
    def _handle(self, deliveries: list[Delivery], stop: threading.Event) -> None:
        if self._cautious and any(not d.redelivered for d in deliveries):
            # Past the redelivered backlog of a crash: back to the full prefetch. (Until now
            # only one message at a time was out, so a poison message that kills the process
            # burns only its own delivery count.)
            self._cautious = False
            self._consumer.set_prefetch(self.options.prefetch)  # type: ignore[union-attr]
        archived = [d for d in deliveries if d.queue == DEAD_LETTER_QUEUE]
        now = time.monotonic()
        held = {queue: max(1, int((at - now) * 1000)) for queue, at in self._paused.items()}
        batch = Batch.build([d for d in deliveries if d.queue != DEAD_LETTER_QUEUE], self.routes,
                            archived=archived, claim_lease=self.options.claim_lease,
                            metrics=self.metrics, held=held, tracing=self.tracing)
        self.metrics.flow.taken(id(self), _oldest_per_route(batch))
        try:
            self._until_stored(lambda: batch.claim_and_deliver(self.store), stop)
            self._until_stored(lambda: self.store.settle(batch.settlement), stop)
            if batch.archive:
                self._until_stored(lambda: self.store.settle(batch.archive), stop)
            self._retry(batch)
            self._consumer.ack(deliveries)  # type: ignore[union-attr]
        finally:
            batch.end_spans()
        self.metrics.flow.settled(id(self))
        for route, hold_ms in batch.holds().items():
            self._hold(route, hold_ms)
        batch.count_settled()
        self.state.batches += 1
        self.state.handled += len(deliveries)
        if self._on_batch is not None:
            self._on_batch(batch)

    def _hold(self, route: str, hold_ms: int) -> None:
        """A sink of ``route`` has an open circuit: stop consuming the route for a while."""
        queue = route_queue(route)
        resume_at = time.monotonic() + hold_ms / 1000
        if self._paused.get(queue, 0) < resume_at:
            if queue not in self._paused:
                log.warning("route.paused", route=route, seconds=hold_ms / 1000,
                            reason="a sink's circuit breaker is open")
                self._consumer.pause(queue)  # type: ignore[union-attr]
            self._paused[queue] = resume_at

    def _resume_due(self) -> None:
        now = time.monotonic()
        for queue, resume_at in list(self._paused.items()):
            if resume_at <= now:
                del self._paused[queue]
                self._consumer.resume(queue)  # type: ignore[union-attr]
                log.info("route.resumed", queue=queue)

    def _retry(self, batch: Batch) -> None:
        for (route, delay_ms), envelopes in batch.retries().items():
            tier = self.topology.tier_for(delay_ms)
            outcomes = self._publisher.retry_later(route, envelopes, tier)  # type: ignore[union-attr]
            failed = next((o for o in outcomes if o is not None), None)
            if failed is not None:
                # Not acked: the broker redelivers the originals and the ledger keeps effects
                # single. Surface it as a connection problem so the worker reconnects.
                raise BrokerUnavailable(f"could not hand messages to the retry tier: {failed}")

    def _until_stored(self, action: Callable[[], Any], stop: threading.Event) -> None:
        """Run ``action``; while the store is unreachable, hold everything and wait for it."""
        while True:
            try:
                action()
                if self.state.paused:
                    self._resume()
                return
            except StoreUnavailable as exc:
                if not self.state.paused:
                    self._pause(exc)
                self._wait_for_store(stop)

    def _pause(self, exc: StoreUnavailable) -> None:
        self.state.paused = True
        self.state.last_error = str(exc)
        self.state.events = [*self.state.events[-99:], "paused"]
        self.metrics.worker_paused.set(1)
        log.warning("worker.paused", reason=str(exc),
                    hint="holding unacked messages until the store answers")

    def _resume(self) -> None:
        self.state.paused = False
        self.state.events = [*self.state.events[-99:], "resumed"]
        self.metrics.worker_paused.set(0)
        log.info("worker.resumed")

    def _wait_for_store(self, stop: threading.Event) -> None:
        # Keep the broker connection alive (heartbeats) while waiting; never stop for `stop`
        # here: settling what was already delivered matters more than a quick exit.
        deadline = time.monotonic() + self.options.store_probe_interval
        while time.monotonic() < deadline:
            try:
                self._consumer.keepalive(  # type: ignore[union-attr]
                    max(0.0, deadline - time.monotonic()))
            except BrokerUnavailable:
                stop.wait(0.1)
        try:
            self.store.ping()
        except StoreUnavailable:
            pass
