"""Messages held until their date (the ``hold`` connector): kept once per holder and
idempotency key, then moved into the outbox and out of the hold in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, tuple_

from integration_bus.envelope import Envelope
from integration_bus.store import outbox as outbox_ops
from integration_bus.store.database import Database, dialect_insert
from integration_bus.store.outbox import OutboxItem
from integration_bus.store.schema import held_messages as held

__all__ = ["Held", "HeldMessages"]


@dataclass(frozen=True, slots=True)
class Held:
    """An envelope (as its dict) to hold until ``due_at``, under ``idempotency_key``."""

    idempotency_key: str
    due_at: datetime
    envelope: dict[str, Any]


class HeldMessages:
    """The held messages of one store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def hold(self, holder: str, items: Sequence[Held], *, now: datetime) -> None:
        """Keep ``items`` for ``holder``; a key it already holds stays as it is."""
        rows = [{"holder": holder, "idempotency_key": i.idempotency_key, "due_at": i.due_at,
                 "envelope": i.envelope, "held_at": now} for i in items]
        with self.db.begin() as conn:  # once per key: a repeat is already held
            conn.execute(dialect_insert(conn.dialect.name, held).on_conflict_do_nothing(), rows)

    def count(self) -> int:
        """How many messages are held, by every holder."""
        with self.db.begin(read_only=True) as conn:
            return int(conn.execute(select(func.count()).select_from(held)).scalar_one())

    def release_due(self, holder: str, due_by: datetime, *, exchange: str, reason: str,
                    now: datetime, limit: int = 500) -> int:
        """Move ``holder``'s messages due by ``due_by`` (the ``limit`` soonest looked at) into
        the outbox, each to ``exchange`` with its type as routing key, and out of the hold, in
        one transaction; how many."""
        with self.db.begin() as conn:
            rows = conn.execute(select(held.c.idempotency_key, held.c.envelope, held.c.due_at)
                                .where(held.c.holder == holder)
                                .order_by(held.c.due_at).limit(limit)).all()
            due = [r for r in rows if r.due_at.replace(tzinfo=UTC) <= due_by]
            if not due:
                return 0
            envelopes = [Envelope.from_dict(r.envelope) for r in due]
            outbox_ops.add(conn, [OutboxItem(exchange, e.type, e) for e in envelopes],
                           reason=reason, now=now)
            conn.execute(delete(held).where(
                held.c.holder == holder,
                tuple_(held.c.holder, held.c.idempotency_key).in_(
                    [(holder, r.idempotency_key) for r in due])))
        return len(due)
