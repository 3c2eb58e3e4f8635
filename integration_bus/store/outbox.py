"""The outbox: envelopes to publish, committed with the state change that caused them.

A relay *claims* rows before publishing them (``claimed_by``/``claimed_at``), so two relays
(the running bus and a CLI replay, say) do not both publish a row; a claim older than the lease
is stale and may be taken again. A claim whose holder is known dead (its identity is host + pid
+ process start time, see ``liveness``) is taken over at once, without waiting out the lease:
a ``bus dlq replay`` killed mid-batch is resumed by the next run, or by the running bus's
relay, immediately. Publishing a row that carries a
``dead_letter_id`` marks that dead letter ``replayed`` in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, and_, func, insert, or_, select, update

from integration_bus.envelope import Envelope
from integration_bus.liveness import holder_alive
from integration_bus.store.schema import dead_letters, outbox

__all__ = ["OutboxItem", "OutboxRow", "add", "claim", "done", "pending", "release"]


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
    taken_from: str | None = None  # the holder whose claim this row was taken over from


def add(conn: Connection, items: Sequence[OutboxItem], *, reason: str, now: datetime) -> None:
    if items:
        conn.execute(insert(outbox), [
            {"envelope_id": i.envelope.id, "exchange": i.exchange, "routing_key": i.routing_key,
             "envelope": i.envelope.to_dict(), "reason": reason, "created_at": now,
             "dead_letter_id": i.dead_letter_id} for i in items])


def claim(conn: Connection, relay: str, *, limit: int, now: datetime, lease: timedelta,
          dead_letter_ids: Sequence[str] | None = None) -> list[OutboxRow]:
    """Claim up to ``limit`` unpublished rows (oldest first) for ``relay``: rows nobody holds,
    rows whose claim is older than ``lease``, and at once rows held by a relay whose process
    is known dead (:func:`~integration_bus.liveness.holder_alive`). A row taken from another
    holder says whom in ``taken_from``."""
    unpublished: ColumnElement[bool] = outbox.c.published_at.is_(None)
    if dead_letter_ids is not None:
        unpublished = and_(unpublished, outbox.c.dead_letter_id.in_(list(dead_letter_ids)))
    holders = conn.execute(select(outbox.c.claimed_by).distinct().where(
        unpublished, outbox.c.claimed_by.is_not(None), outbox.c.claimed_by != relay,
        outbox.c.claimed_at >= now - lease)).scalars().all()
    dead = [h for h in holders if not holder_alive(h)]
    free = or_(outbox.c.claimed_at.is_(None), outbox.c.claimed_at < now - lease)
    claimable = and_(unpublished, or_(free, outbox.c.claimed_by.in_(dead)) if dead else free)
    candidates = select(outbox.c.id, outbox.c.claimed_by).where(claimable) \
        .order_by(outbox.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    before = {r.id: r.claimed_by for r in conn.execute(candidates)}
    if not before:
        return []
    rows = conn.execute(
        update(outbox).where(outbox.c.id.in_(list(before)), claimable)
        .values(claimed_by=relay, claimed_at=now)
        .returning(outbox.c.id, outbox.c.exchange, outbox.c.routing_key, outbox.c.envelope,
                   outbox.c.dead_letter_id)).all()
    return sorted((OutboxRow(r.id, r.exchange, r.routing_key, Envelope.from_dict(r.envelope),
                             r.dead_letter_id, before.get(r.id)) for r in rows),
                  key=lambda r: r.id)


def pending(conn: Connection, dead_letter_ids: Sequence[str] | None = None) -> dict[str, int]:
    """Unpublished rows by holder (``""``: nobody holds them), optionally only those of some
    dead letters."""
    where: ColumnElement[bool] = outbox.c.published_at.is_(None)
    if dead_letter_ids is not None:
        where = and_(where, outbox.c.dead_letter_id.in_(list(dead_letter_ids)))
    return {str(holder or ""): int(count) for holder, count in conn.execute(
        select(outbox.c.claimed_by, func.count()).where(where).group_by(outbox.c.claimed_by))}


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
