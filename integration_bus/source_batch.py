"""Sources that hand the runtime a batch and an ack: "acknowledge only after the broker
confirmed" is written here, once (DESIGN §3.1).

A :class:`BatchSource` reads; the runtime publishes. ``read(stop)`` returns the next
:class:`SourceBatch` — envelopes plus an ``ack`` callback — and :func:`run_batch_source` publishes
the envelopes (persistent, mandatory, with publisher confirms) and only then calls
``batch.ack(outcomes)`` with one outcome per envelope, in order:

- ``None``: confirmed and routed. The source acknowledges it to its system (moves a cursor,
  archives a file, answers a webhook).
- a ``PermanentError`` (``UnroutableError``: no route takes the type; ``UnpublishableError``:
  too big or too deep to travel): the broker will never take it. The source dead-letters it
  at its source (``ConnectorContext.reject``) and may move past it.
- any other error (``PublishNacked``, ``BrokerUnavailable``): not taken. The source must not
  acknowledge it — nor, if its input is ordered, anything after it: it reads it again.

If the process dies, or ``stop`` is set, between ``read`` and ``ack``, ``ack`` is never called:
what was read stays unacknowledged at the source and is read again after a restart (the ledger
absorbs a copy whose confirm arrived before the crash). After a batch that was not fully taken
the runtime waits with backoff before reading again.

A publisher reports each envelope's fate as an outcome. If ``publish_many`` raises instead (a
publisher bug, an envelope it chokes on), the runtime publishes the batch's envelopes one at a
time, so the healthy ones go through: one that raises alone gets an ``UnpublishableError``
outcome (dead-lettered at its source) when the error is of a kind that comes from the input
(``TypeError``, ``ValueError``, ``OverflowError``, ``RecursionError``) or when it failed alone
:data:`STRIKES` times (counted by idempotency key while the loop runs), a ``TransientError``
outcome (read again) until then: no input is read again forever, none holds up the others.

**Push sources.** A source whose system calls it (webhooks) instead of being asked fits the same
contract with an :class:`Inbox`: its receiver (an HTTP server in a thread of its own, started by
the first ``read``) puts each request in the inbox and waits on the returned future; ``read``
takes what is waiting (``Inbox.take``: at most a short wait for the first) and builds the batch,
and its ``ack`` answers each waiting request from its outcome (a 2xx for ``None`` or a
dead-lettered one, a retryable answer for the rest). A request that stops waiting cancels its
future: ``take`` skips it, so nothing is published for it; one already taken stays in its batch
and is acknowledged if it is confirmed (the sender's retry is then a duplicate). ``close``
fails what still waits. Backpressure comes free: while the runtime waits out a failed batch,
requests wait in the inbox and give up with their retryable answer.

Like Benthos' ``ReadBatch`` with its ``AckFunc``: the source knows its system, the runtime owns
the order of publish and acknowledgement.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

import structlog

from integration_bus.backoff import Backoff
from integration_bus.envelope import Envelope
from integration_bus.errors import BusError, PermanentError, TransientError, UnpublishableError

__all__ = ["STRIKES", "Ack", "BatchSource", "Inbox", "SourceBatch", "Waiting",
           "run_batch_source"]

log = structlog.get_logger("integration_bus.source")

#: failures alone after which an envelope whose publish raises is dead-lettered at its source
STRIKES = 3
_INPUT_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)  # encoding the input
_REMEMBERED_STRIKES = 10_000
T = TypeVar("T")
R = TypeVar("R")

#: Called once per batch, after publishing, with one outcome per envelope (None = confirmed).
Ack = Callable[[Sequence[BusError | None]], None]


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """Envelopes read together and the callback that acknowledges them to their system. An
    empty batch (nothing new yet) is acked with no outcomes."""

    envelopes: Sequence[Envelope]
    ack: Ack


@runtime_checkable
class BatchSource(Protocol):
    """A source the runtime drives: it reads, the runtime publishes and then acks.

    ``read`` returns the next batch, or None once the input is exhausted and the source does
    not follow it. With nothing new it may wait (at most a short interval, returning early when
    ``stop`` is set) and return an empty batch. It raises only for faults of the source itself.
    """

    name: str

    def read(self, stop: threading.Event) -> SourceBatch | None: ...

    def close(self) -> None: ...


class _Publishes(Protocol):
    """What :func:`run_batch_source` needs of ``connector.Publisher``."""

    def publish_many(self, envelopes: Sequence[Envelope]) -> list[BusError | None]: ...


def run_batch_source(source: BatchSource, publisher: _Publishes, stop: threading.Event, *,
                     max_backoff: float = 10.0) -> None:
    """Read, publish with confirms, then ack — until ``stop`` is set or the source is done.
    The only place a batch source's acknowledgement is called."""
    retry = Backoff(first=0.5, cap=max_backoff).start()
    strikes: OrderedDict[str, int] = OrderedDict()  # idempotency key -> failures alone
    while not stop.is_set():
        batch = source.read(stop)
        if batch is None:
            return
        outcomes = _publish(publisher, batch.envelopes, strikes, source.name) \
            if batch.envelopes else []
        if len(outcomes) != len(batch.envelopes):  # a publisher bug: acknowledge nothing
            raise RuntimeError(f"{len(outcomes)} publish outcomes for "
                               f"{len(batch.envelopes)} envelopes")
        batch.ack(outcomes)
        if any(o is not None and not isinstance(o, PermanentError) for o in outcomes):
            retry.wait(stop)  # the broker did not take them all: the source reads them again
        else:
            retry.reset()


def _publish(publisher: _Publishes, envelopes: Sequence[Envelope], strikes: OrderedDict[str, int],
             source: str) -> list[BusError | None]:
    try:
        return publisher.publish_many(envelopes)
    except Exception as exc:  # the source's input waits on this loop: settle each one instead
        log.warning("source.batch_publish_failed", source=source, size=len(envelopes),
                    error=f"{type(exc).__name__}: {exc}")
        return [_alone(publisher, envelope, strikes, source) for envelope in envelopes]


def _alone(publisher: _Publishes, envelope: Envelope, strikes: OrderedDict[str, int],
           source: str) -> BusError | None:
    """One envelope of a batch whose publish raised, published on its own (see the module
    doc): its outcome, or the outcome its failure earns."""
    key = envelope.idempotency_key
    try:
        (outcome,) = publisher.publish_many([envelope])
    except Exception as exc:  # as in _publish: it becomes this envelope's outcome
        failures = strikes.pop(key, 0) + 1
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, _INPUT_ERRORS) or failures >= STRIKES:
            return UnpublishableError(f"cannot be published: {reason}"[:500],
                                      attempts=failures, envelope_id=envelope.id)
        strikes[key] = failures
        while len(strikes) > _REMEMBERED_STRIKES:
            strikes.popitem(last=False)
        log.warning("source.not_published_alone", source=source, envelope_id=envelope.id,
                    strikes=failures, error=reason)
        return TransientError(f"publishing failed: {reason}"[:500], envelope_id=envelope.id)
    strikes.pop(key, None)
    return outcome


@dataclass(frozen=True, slots=True)
class Waiting(Generic[T, R]):
    """One item a push source's receiver handed in, and the future it waits on for its answer."""

    item: T
    answer: Future[R]


class Inbox(Generic[T, R]):
    """Where a push source's receiver leaves what it was handed until ``read`` takes it (see
    "Push sources" in the module doc). ``put`` and ``close`` from any thread, ``take`` from the
    runtime's. Lifecycle: use, then ``close`` (idempotent)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Waiting[T, R]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False

    def put(self, item: T) -> Future[R]:
        """Hand ``item`` in; the future is settled by the ack of the batch that takes it
        (or failed with a TransientError once the inbox is closed). Cancel it to give up:
        an item not taken yet is then never published."""
        answer: Future[R] = Future()
        with self._lock:
            if not self._closed:
                self._queue.put(Waiting(item, answer))
                return answer
        answer.set_exception(TransientError("the source is stopping"))
        return answer

    def take(self, stop: threading.Event, *, limit: int, wait: float) -> list[Waiting[T, R]]:
        """Up to ``limit`` waiting items, skipping cancelled ones (their futures now run).
        Waits up to ``wait`` seconds for the first, returning early (empty) once ``stop`` is
        set."""
        deadline = time.monotonic() + wait
        taken: list[Waiting[T, R]] = []
        while not taken:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.is_set():
                return taken
            try:  # in slices, so a stop is seen even when nothing arrives
                first = self._queue.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            if first.answer.set_running_or_notify_cancel():
                taken.append(first)
        while len(taken) < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item.answer.set_running_or_notify_cancel():
                taken.append(item)
        return taken

    def close(self) -> None:
        """Refuse new items and fail the waiting ones (TransientError: their senders try
        again). Items already taken are settled by their batch's ack."""
        with self._lock:
            self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item.answer.set_running_or_notify_cancel():
                item.answer.set_exception(TransientError("the source is stopping"))
