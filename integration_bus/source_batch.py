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

Like Benthos' ``ReadBatch`` with its ``AckFunc``: the source knows its system, the runtime owns
the order of publish and acknowledgement.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from integration_bus.backoff import Backoff
from integration_bus.envelope import Envelope
from integration_bus.errors import BusError, PermanentError

__all__ = ["Ack", "BatchSource", "SourceBatch", "run_batch_source"]

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
    while not stop.is_set():
        batch = source.read(stop)
        if batch is None:
            return
        outcomes = publisher.publish_many(batch.envelopes) if batch.envelopes else []
        if len(outcomes) != len(batch.envelopes):  # a publisher bug: acknowledge nothing
            raise RuntimeError(f"{len(outcomes)} publish outcomes for "
                               f"{len(batch.envelopes)} envelopes")
        batch.ack(outcomes)
        if any(o is not None and not isinstance(o, PermanentError) for o in outcomes):
            retry.wait(stop)  # the broker did not take them all: the source reads them again
        else:
            retry.reset()
