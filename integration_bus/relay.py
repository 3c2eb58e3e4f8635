"""The outbox relay: publishes rows the store committed (replays, sends from the CLI).

Rows are claimed first, so concurrent relays do not publish the same row; a claim held by a
relay whose process died (a killed ``bus dlq replay``) is taken over at once. A row is marked
published only after the broker confirmed and routed it; a crash in between re-publishes the same
envelope (same id and idempotency key) and the ledger absorbs it. A row no route takes, or whose
envelope cannot travel (UnpublishableError: too deep to encode, too big), becomes a dead letter
on its own (or, for a replay, sends its dead letter back to 'new' with the reason); it never
holds up the rows behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import structlog

from integration_bus.backoff import Backoff
from integration_bus.envelope import new_id
from integration_bus.errors import BusError, PermanentError
from integration_bus.liveness import process_identity
from integration_bus.store import Store
from integration_bus.transport import Outgoing, TransportPublisher

__all__ = ["OutboxRelay"]

log = structlog.get_logger("integration_bus.relay")


class OutboxRelay:
    """Publishes outbox rows. ``rate`` caps messages per second (None: as fast as confirms go).
    ``dead_letter_ids`` limits it to the rows of those dead letters (a CLI replay)."""

    def __init__(self, store: Store, open_publisher: Callable[[], TransportPublisher], *,
                 batch: int = 500, idle_interval: float = 0.5, rate: float | None = None,
                 dead_letter_ids: Sequence[str] | None = None) -> None:
        self._store = store
        self._open_publisher = open_publisher
        self._batch = max(1, min(batch, int(rate))) if rate else batch
        self._idle = idle_interval
        self._rate = rate
        self._only = list(dead_letter_ids) if dead_letter_ids is not None else None
        self._publisher: TransportPublisher | None = None
        #: the claim holder's name: this process's identity (host:pid:start) and a nonce, so a
        #: claim left by a dead relay is recognised as such and taken over at once
        self.name = f"{process_identity()}:{new_id()[-6:].lower()}"
        self.published = 0
        #: claims taken over from other holders (dead, or past their lease): holder -> rows
        self.taken_over: dict[str, int] = {}

    def run(self, stop: threading.Event) -> None:
        # an outage (store or broker) doubles the wait from twice the idle interval up to 10 s
        outage = Backoff(first=min(2 * self._idle, 10.0), cap=10.0).start()
        try:
            while not stop.is_set():
                wait = self._idle
                try:
                    moved = self.relay_once()
                    outage.reset()
                except BusError as exc:
                    log.warning("relay.waiting", error=str(exc))
                    moved = 0
                    wait = outage.failed()
                if not moved:
                    stop.wait(wait)
        finally:
            self.close()

    def relay_once(self) -> int:
        """Publish one batch of claimed rows; returns how many were settled."""
        started = time.monotonic()
        if not self._store.outbox_waiting():  # a cheap read first: no write lock when idle
            return 0
        rows = self._store.outbox_claim(self.name, limit=self._batch,
                                        dead_letter_ids=self._only)
        if not rows:
            return 0
        for row in rows:
            if row.taken_from is not None:
                self.taken_over[row.taken_from] = self.taken_over.get(row.taken_from, 0) + 1
        taken = {r.taken_from for r in rows if r.taken_from is not None}
        if taken:
            log.warning("relay.took_over", holders=sorted(taken),
                        rows=sum(1 for r in rows if r.taken_from is not None))
        if self._publisher is None:
            self._publisher = self._open_publisher()
        outcomes = self._publisher.send([Outgoing(r.exchange, r.routing_key, r.envelope)
                                         for r in rows])
        published = [r for r, outcome in zip(rows, outcomes, strict=True) if outcome is None]
        refused = [(r, o) for r, o in zip(rows, outcomes, strict=True)
                   if isinstance(o, PermanentError)]  # unroutable, or cannot travel: alone
        failed = [(r, o) for r, o in zip(rows, outcomes, strict=True)
                  if o is not None and not isinstance(o, PermanentError)]
        self._store.outbox_done(published)
        for row, error in refused:
            log.error("relay.refused", envelope_id=row.envelope.id, error=str(error))
            self._store.outbox_unroutable(row, error)
        self.published += len(published)
        if failed:
            self._store.outbox_release([r for r, _ in failed])
            raise failed[0][1]
        self._pace(len(rows), started)
        return len(rows)

    def drain(self, progress: Callable[[int], None] | None = None) -> int:
        """Relay until no claimable row is left (a CLI replay); returns how many published."""
        try:
            while moved := self.relay_once():
                if progress is not None:
                    progress(moved)
        finally:
            self.close()
        return self.published

    def _pace(self, count: int, started: float) -> None:
        if self._rate:
            spare = count / self._rate - (time.monotonic() - started)
            if spare > 0:
                threading.Event().wait(spare)

    def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()

