"""Embedded mode's message queues, in the store: a message is durable once its insert commits.

One row per message: its route queue, body (the envelope's JSON), headers, when it is due
(``due_ms``: a retry waits until then) and the consumer holding it (``claimed_by``, unacked).
``take`` claims due rows in id order (a consumer's prefetch); ``ack`` deletes them; ``release``
gives a consumer's claims back. A consumer's name starts with its process identity
(``liveness``), so rows held by a process that died (``kill -9``) are found by
:meth:`MessageQueue.free_dead` and delivered again — nothing is lost with the process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from integration_bus.liveness import holder_alive
from integration_bus.store.database import Database
from integration_bus.store.schema import embedded_queue

__all__ = ["MessageQueue", "QueuedMessage"]

_Q = embedded_queue.c


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: int
    queue: str
    body: bytes
    headers: Mapping[str, Any]
    deliveries: int  # including this one


class MessageQueue:
    """The queue table of one store. Every method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, rows: Sequence[tuple[str, bytes, Mapping[str, Any] | None, int]]) -> None:
        """Insert (queue, body, headers, due_ms) rows; durable when this returns."""
        if rows:
            with self._db.begin() as conn:
                conn.execute(insert(embedded_queue), [
                    {"queue": q, "body": b, "headers": dict(h) if h else None, "due_ms": d}
                    for q, b, h, d in rows])

    def take(self, queues: Sequence[str], holder: str, limit: int,
             now_ms: int) -> list[QueuedMessage]:
        """Claim up to ``limit`` due, unclaimed messages of ``queues`` (oldest first)."""
        if not queues or limit <= 0:
            return []
        candidates = select(_Q.id).where(_Q.queue.in_(list(queues)), _Q.claimed_by.is_(None),
                                         _Q.due_ms <= now_ms).order_by(_Q.id).limit(limit)
        if self._db.dialect == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        with self._db.begin() as conn:
            rows = conn.execute(
                update(embedded_queue)
                .where(_Q.id.in_(candidates.scalar_subquery()), _Q.claimed_by.is_(None))
                .values(claimed_by=holder, deliveries=_Q.deliveries + 1)
                .returning(_Q.id, _Q.queue, _Q.body, _Q.headers, _Q.deliveries)).all()
        return sorted((QueuedMessage(r.id, r.queue, bytes(r.body), r.headers or {},
                                     r.deliveries) for r in rows), key=lambda m: m.id)

    def ack(self, ids: Sequence[int]) -> None:
        if ids:
            with self._db.begin() as conn:
                conn.execute(delete(embedded_queue).where(_Q.id.in_(list(ids))))

    def release(self, holder: str, ids: Sequence[int] | None = None) -> None:
        """Give ``holder``'s claims back (all, or those of ``ids``): they are delivered again."""
        where = _Q.claimed_by == holder
        with self._db.begin() as conn:
            conn.execute(update(embedded_queue)
                         .where(where if ids is None else where & _Q.id.in_(list(ids)))
                         .values(claimed_by=None))

    def free_dead(self) -> dict[str, int]:
        """Give back every claim of a holder known to be dead; returns holder -> rows."""
        with self._db.begin() as conn:
            holders = conn.execute(select(_Q.claimed_by, func.count()).where(
                _Q.claimed_by.is_not(None)).group_by(_Q.claimed_by)).all()
            dead = {str(h): int(n) for h, n in holders if not holder_alive(str(h))}
            if dead:
                conn.execute(update(embedded_queue).where(_Q.claimed_by.in_(list(dead)))
                             .values(claimed_by=None))
        return dead

    def depth(self, queue: str | None = None) -> int:
        """Messages queued (claimed or not, due or waiting for a retry)."""
        query = select(func.count()).select_from(embedded_queue)
        if queue is not None:
            query = query.where(_Q.queue == queue)
        with self._db.begin(read_only=True) as conn:
            return int(conn.execute(query).scalar_one())

    def waiting(self, now_ms: int) -> int:
        """Messages waiting for a retry (not due yet)."""
        with self._db.begin(read_only=True) as conn:
            return int(conn.execute(select(func.count()).where(_Q.due_ms > now_ms))
                       .scalar_one())
