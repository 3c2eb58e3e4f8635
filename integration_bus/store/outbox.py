"""The outbox: envelopes to publish, committed with the state change that caused them.

A relay *claims* rows before publishing them (``claimed_by``/``claimed_at``), so two relays
(the running bus and a CLI replay, say) do not both publish a row; a claim older than the lease
is stale and may be taken again. A claim whose holder is known dead (its identity is host + pid
+ process start time, see ``liveness``) is taken over at once, without waiting out the lease:
a ``bus dlq replay`` killed mid-batch is resumed by the next run, or by the running bus's
relay, immediately. Publishing a row that carries a
``dead_letter_id`` marks that dead letter ``replayed`` in the same transaction.

Every function runs inside the caller's transaction (``conn``): a polling source stages its
rows with its cursor (:func:`stage`), the relay settles a row it cannot publish with the dead
letter that keeps its message (:func:`unroutable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from integration_bus.envelope import Envelope, new_id
from integration_bus.liveness import holder_alive
from integration_bus.store import cursors as cursor_ops
from integration_bus.store import dead_letters as dead_letter_ops
from integration_bus.store import journal as journal_ops
from integration_bus.store.records import DeadLetter, JournalEntry
from integration_bus.store.schema import dead_letters, outbox

__all__ = ["OutboxItem", "OutboxRow", "add", "claim", "done", "pending", "purge_published",
           "release", "stage", "unroutable", "waiting"]


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


def stage(conn: Connection, items: Sequence[OutboxItem], *, reason: str, now: datetime,
          cursor: tuple[str, str] | None = None) -> None:
    """:func:`add` ``items`` and set the (key, value) ``cursor`` with them (polling sources)."""
    add(conn, items, reason=reason, now=now)
    if cursor is not None:
        cursor_ops.set_value(conn, *cursor, now=now)


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


def waiting(conn: Connection) -> int:
    """Rows not yet published (claimed or not)."""
    return int(conn.execute(select(func.count()).where(
        outbox.c.published_at.is_(None))).scalar_one())


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


def unroutable(conn: Connection, row: OutboxRow, *, kind: str, error: str,
               now: datetime) -> None:
    """Settle ``row`` whose message no route takes (``kind`` ``UnroutableError``) or cannot
    travel (another error type), and keep the message as a dead letter: a replay's dead letter
    goes back to ``new`` with the reason (to be redirected or fixed), any other message becomes
    a dead letter of its own, journalled ``dead_lettered``. ``error``: the text to keep (already
    redacted)."""
    reason = "unroutable" if kind == "UnroutableError" else "unpublishable"
    done(conn, [row], now=now, error=error)
    if row.dead_letter_id:
        dead_letter_ops.set_status(conn, [row.dead_letter_id], from_statuses=("replaying",),
                                   status="new", reason=f"replay {reason}: {error}", now=now)
        return
    letter = DeadLetter(id=new_id(), envelope=row.envelope.to_dict(), route=None, reason=reason,
                        error_type=kind, message=error, failed_at=now, step="outbox",
                        source_ref=row.envelope.headers.get("source_ref"))
    journal_ops.append_many(conn, [JournalEntry(row.envelope.id, "dead_lettered", now,
                                                detail={"reason": reason})])
    dead_letter_ops.add(conn, letter, [])


def release(conn: Connection, rows: Sequence[OutboxRow]) -> None:
    """Give claimed rows back (publishing failed; try again soon)."""
    if rows:
        conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                     .values(claimed_by=None, claimed_at=None))


def purge_published(conn: Connection, *, before: datetime) -> int:
    """Delete rows published before ``before`` (retention); how many."""
    return int(conn.execute(delete(outbox).where(
        outbox.c.published_at.is_not(None), outbox.c.published_at < before)).rowcount or 0)
