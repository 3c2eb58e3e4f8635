"""Settling a worker batch: its journal rows, ledger outcomes, dead letters and crash-marker
removals (and the lane's next batch's crash marker), written in one transaction before its
messages are acked.

:func:`settle` is on the hot path of every message: per batch it runs one journal insert
(:func:`integration_bus.store.journal.append_many`: ``COPY`` on PostgreSQL, ``executemany`` on
SQLite), the ledger updates, one insert per dead letter (after reading that envelope's
retries), the marker removals and the next batch's marker.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from integration_bus.redact import Redaction
from integration_bus.store import dead_letters as dead_letter_ops
from integration_bus.store import journal as journal_ops
from integration_bus.store import ledger as ledger_ops
from integration_bus.store import markers as marker_ops
from integration_bus.store.database import Database
from integration_bus.store.markers import MarkerKey, Unmark
from integration_bus.store.records import DeadLetter, JournalEntry, utcnow

__all__ = ["Settlement", "redacted", "settle", "storable", "write"]

log = structlog.get_logger("integration_bus.store")


@dataclass
class Settlement:
    """What a worker batch changes, written in one transaction before its messages are acked."""

    journal: list[JournalEntry] = field(default_factory=list)
    done: list[tuple[str, str, str]] = field(default_factory=list)  # (sink, key, owner)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: crash marker rows to remove (member None) or members to remove from a row
    unmark: list[Unmark] = field(default_factory=list)
    #: the crash marker of the lane's next batch (row, (route, envelope id) keys, owner),
    #: written in the same transaction: one transaction less per batch (docs/lifecycle.md)
    mark: tuple[str, list[MarkerKey], str] | None = None

    def __bool__(self) -> bool:
        return bool(self.journal or self.done or self.failed or self.dead or self.unmark
                    or self.mark)


def settle(db: Database, batch: Settlement, *, redaction: Redaction) -> None:
    """Journal + ledger outcomes + dead letters of a batch, atomically, after ``redaction``
    (see :func:`redacted`). Raises StoreUnavailable when the database cannot be reached.

    Data the database refuses (PostgreSQL rejects NUL characters in text and JSON, and
    over-long values in bounded columns) must not wedge the worker: the batch is written
    again with such values made storable (NUL as U+FFFD, long values cut and marked), so
    the dead letter exists, readable, instead of a redelivery loop.
    """
    batch = redacted(batch, redaction)
    try:
        _write(db, batch)
    except DBAPIError as exc:
        log.warning("store.refused_batch", error=str(exc.orig or exc).splitlines()[0],
                    hint="writing it again with unstorable characters replaced")
        _write(db, storable(batch))


def _write(db: Database, batch: Settlement) -> None:
    now = utcnow()
    with db.begin() as conn:
        write(conn, batch, now=now)


def write(conn: Connection, batch: Settlement, *, now: datetime) -> None:
    """Write ``batch`` as it is, inside the caller's transaction. A dead letter already kept
    for the same (envelope, route) stays as it is: settling a redelivered batch is harmless."""
    journal_ops.append_many(conn, batch.journal)
    ledger_ops.complete(conn, batch.done, now=now)
    ledger_ops.release(conn, batch.failed, now=now)
    for letter in batch.dead:
        history = journal_ops.attempt_history(conn, letter.envelope["id"], letter.route)
        dead_letter_ops.add(conn, letter, history)
    if batch.mark is None:
        marker_ops.remove(conn, batch.unmark)
    else:  # the row this batch leaves may be the one the next batch is marked in
        row, keys, owner = batch.mark
        marker_ops.remove(conn, [u for u in batch.unmark if u != (row, None)])
        marker_ops.add(conn, row, keys, owner, now)


def redacted(batch: Settlement, redaction: Redaction) -> Settlement:
    """The batch with secrets masked in what it writes about failures: journal detail
    (personal data stripped too) and a dead letter's message, traceback and attempts. The
    envelope itself is kept as received: a replay must send the real payload."""
    hide = redaction
    # a dead letter's journal entry may repeat values of its payload: mask those too
    echoes = {d.envelope.get("id"): hide.echoes(d.envelope) for d in batch.dead}
    journal_rows = [e if not e.detail or e.event in _BUS_MADE_DETAIL
                    else dataclasses.replace(e, detail=hide.data(
                        e.detail, echoes=echoes.get(e.envelope_id)))
                    for e in batch.journal]
    letters = [dataclasses.replace(d, message=hide.text(d.message, unmask=True) or "",
                                   traceback=hide.text(d.traceback, unmask=True),
                                   attempts=hide.data(d.attempts, unmask=True))
               for d in batch.dead]
    return dataclasses.replace(batch, journal=journal_rows, dead=letters)


# Events whose detail the worker writes from its own facts only (type, delivery count, output
# id, idempotency key): nothing a partner sent, no error text. They are most of the journal, so
# they skip the redaction walk (measured: ~0.1 ms per message otherwise).
_BUS_MADE_DETAIL = frozenset({"received", "delivered", "duplicate", "filtered"})

_LIMITS = {"envelope_id": 64, "route": 128, "step": 128, "sink": 128, "error_type": 128,
           "event": 32, "reason": 32, "mapping_version": 80, "source": 128}


def _clean(value: Any, limit: int | None = None) -> Any:
    if isinstance(value, str):
        value = value.replace("\x00", "\ufffd")
        if limit is not None and len(value) > limit:
            value = value[:limit - 1] + "…"
        return value
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def storable(batch: Settlement) -> Settlement:
    """The same settlement with values every database accepts (see :func:`settle`)."""
    journal_rows = [dataclasses.replace(e, **{k: _clean(getattr(e, k), n) for k, n in
                                               _LIMITS.items() if hasattr(e, k)},
                                        detail=_clean(e.detail)) for e in batch.journal]
    letters = [dataclasses.replace(d, envelope=_clean(d.envelope), message=_clean(d.message),
                                   traceback=_clean(d.traceback), attempts=_clean(d.attempts),
                                   source_ref=_clean(d.source_ref),
                                   route=_clean(d.route, 128), step=_clean(d.step, 128),
                                   sink=_clean(d.sink, 128),
                                   error_type=_clean(d.error_type, 128)) for d in batch.dead]
    return dataclasses.replace(batch, journal=journal_rows, dead=letters)
