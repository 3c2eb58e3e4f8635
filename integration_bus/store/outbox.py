"""The outbox: envelopes to publish, committed with the state change that caused them.

A relay *claims* rows before publishing them (``claimed_by``/``claimed_at``), so two relays
(the running bus and a CLI replay, say) do not both publish a row; a claim older than the lease
is stale and may be taken again (the relay holding it died). Publishing a row that carries a
``dead_letter_id`` marks that dead letter ``replayed`` in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, insert, or_, select, update

from integration_bus.envelope import Envelope
from integration_bus.store.schema import dead_letters, outbox

__all__ = ["OutboxItem", "OutboxRow", "add", "claim", "done", "release"]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """An envelope to publish to ``exchange`` with ``routing_key``."""

    exchange: str
    routing_key: str
    envelope: Envelope
    dead_letter_id: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    exchange: str
    routing_key: str
    envelope: Envelope
    dead_letter_id: str | None


def add(conn: Connection, items: Sequence[OutboxItem], *, reason: str, now: datetime) -> None:
    if items:
        conn.execute(insert(outbox), [
            {"envelope_id": i.envelope.id, "exchange": i.exchange, "routing_key": i.routing_key,
             "envelope": i.envelope.to_dict(), "reason": reason, "created_at": now,
             "dead_letter_id": i.dead_letter_id} for i in items])


def claim(conn: Connection, relay: str, *, limit: int, now: datetime, lease: timedelta,
          dead_letter_ids: Sequence[str] | None = None) -> list[OutboxRow]:
    """Claim up to ``limit`` unpublished rows (oldest first) for ``relay``."""
    claimable = and_(outbox.c.published_at.is_(None),
                     or_(outbox.c.claimed_at.is_(None), outbox.c.claimed_at < now - lease))
    if dead_letter_ids is not None:
        claimable = and_(claimable, outbox.c.dead_letter_id.in_(list(dead_letter_ids)))
    candidates = select(outbox.c.id).where(claimable).order_by(outbox.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    rows = conn.execute(
        update(outbox).where(outbox.c.id.in_(candidates.scalar_subquery()), claimable)
        .values(claimed_by=relay, claimed_at=now)
        .returning(outbox.c.id, outbox.c.exchange, outbox.c.routing_key, outbox.c.envelope,
                   outbox.c.dead_letter_id)).all()
    return sorted((OutboxRow(r.id, r.exchange, r.routing_key, Envelope.from_dict(r.envelope),
                             r.dead_letter_id) for r in rows), key=lambda r: r.id)


def done(conn: Connection, rows: Sequence[OutboxRow], *, now: datetime,
         error: str | None = None) -> None:
    """Mark rows published (or settled with ``error``); replayed dead letters follow."""
    if not rows:
        return
    conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                 .values(published_at=now, error=error))
    replayed = [r.dead_letter_id for r in rows if r.dead_letter_id]
    if replayed and error is None:
        conn.execute(update(dead_letters)
                     .where(dead_letters.c.id.in_(replayed), dead_letters.c.status == "replaying")
                     .values(status="replayed", updated_at=now))


def release(conn: Connection, rows: Sequence[OutboxRow]) -> None:
    """Give claimed rows back (publishing failed; try again soon)."""
    if rows:
        conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                     .values(claimed_by=None, claimed_at=None))
