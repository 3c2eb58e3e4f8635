"""The outbox relay: publishes rows the store committed (replays, sends from the CLI).

A row is marked published only after the broker confirmed and routed it; a crash in between
re-publishes the same envelope (same id and idempotency key) and the ledger absorbs it. An
unroutable row is marked with its error and kept, so it is visible instead of retried forever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from integration_bus.errors import BusError, StoreUnavailable, UnroutableError
from integration_bus.store import Store
from integration_bus.transport import Outgoing, TransportPublisher

__all__ = ["OutboxRelay"]

log = structlog.get_logger("integration_bus.relay")


class OutboxRelay:
    def __init__(self, store: Store, open_publisher: Callable[[], TransportPublisher], *,
                 batch: int = 500, idle_interval: float = 0.5) -> None:
        self._store = store
        self._open_publisher = open_publisher
        self._batch = batch
        self._idle = idle_interval
        self._publisher: TransportPublisher | None = None

    def run(self, stop: threading.Event) -> None:
        backoff = self._idle
        try:
            while not stop.is_set():
                try:
                    moved = self.relay_once()
                    backoff = self._idle
                except (StoreUnavailable, BusError) as exc:
                    log.warning("relay.waiting", error=str(exc))
                    moved = 0
                    backoff = min(backoff * 2, 10.0)
                if not moved:
                    stop.wait(backoff)
        finally:
            if self._publisher is not None:
                self._publisher.close()

    def relay_once(self) -> int:
        """Publish one batch of pending rows; returns how many were settled."""
        rows = self._store.outbox_pending(self._batch)
        if not rows:
            return 0
        if self._publisher is None:
            self._publisher = self._open_publisher()
        outcomes = self._publisher.send([Outgoing(r.exchange, r.routing_key, r.envelope)
                                         for r in rows])
        published = [r.id for r, outcome in zip(rows, outcomes, strict=True) if outcome is None]
        self._store.outbox_done(published)
        for row, outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, UnroutableError):
                log.error("relay.unroutable", envelope_id=row.envelope.id, error=str(outcome))
                self._store.outbox_done([row.id], error=str(outcome))
        failed = next((o for o in outcomes if o is not None
                       and not isinstance(o, UnroutableError)), None)
        if failed is not None:
            raise failed
        return len(rows)
