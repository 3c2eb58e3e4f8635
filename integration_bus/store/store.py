"""The Store: journal, idempotency ledger, dead letters, outbox and cursors behind one object.

Every method is one transaction and raises StoreUnavailable when the database cannot be reached.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from integration_bus.envelope import new_id
from integration_bus.errors import BusError
from integration_bus.liveness import holder_alive
from integration_bus.redact import Redaction
from integration_bus.store import cursors as cursor_ops
from integration_bus.store import dead_letters as dead_letter_ops
from integration_bus.store import gauges
from integration_bus.store import ledger as ledger_ops
from integration_bus.store import lineage as lineage_ops
from integration_bus.store import markers as marker_ops
from integration_bus.store import outbox as outbox_ops
from integration_bus.store.database import Database, dialect_insert
from integration_bus.store.ledger import Claim, ClaimOutcome
from integration_bus.store.markers import CrashMarker, Unmark
from integration_bus.store.outbox import OutboxItem, OutboxRow
from integration_bus.store.queue import MessageQueue
from integration_bus.store.records import DeadLetter, JournalEntry
from integration_bus.store.schema import (
    crash_markers,
    dead_letters,
    journal,
    ledger,
    outbox,
    seen_keys,
)

__all__ = ["Settlement", "Store", "holder_alive", "storable"]

log = structlog.get_logger("integration_bus.store")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Settlement:
    """What a worker batch changes, written in one transaction before its messages are acked."""

    journal: list[JournalEntry] = field(default_factory=list)
    done: list[tuple[str, str, str]] = field(default_factory=list)  # (sink, key, owner)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: crash marker rows to remove (member None) or members to remove from a row
    unmark: list[Unmark] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.journal or self.done or self.failed or self.dead or self.unmark)


class Store:
    """Owns a Database. Build with :meth:`open`; ``close()`` is idempotent.

    What it writes about failures passes ``redaction`` first: secrets never reach the journal
    or a dead letter's message, traceback and attempts; journal detail is also stripped of
    personal data (nothing needs it back). The envelope itself is stored as received: a replay
    must send the real payload (it is masked when shown).
    """

    def __init__(self, db: Database, *, redaction: Redaction | None = None) -> None:
        self.db = db
        self.redaction = redaction or Redaction()
        #: embedded mode's message queues (see ``store.queue``)
        self.queue = MessageQueue(db)

    @classmethod
    def open(cls, url: str, *, root: Path | None = None, migrate: bool = True,
             pool_size: int = 5, redaction: Redaction | None = None) -> Store:
        """``migrate``: bring the schema to head; else require it to be there already
        (ConfigError naming ``bus db upgrade``), changing nothing."""
        store = cls(Database(url, root=root, pool_size=pool_size), redaction=redaction)
        try:
            if migrate:
                store.db.migrate()
            else:
                store.db.require_current()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        self.db.close()

    def ping(self) -> None:
        self.db.ping()

    # -- ledger ------------------------------------------------------------------------------
    def claim(self, claims: Sequence[Claim], *, lease: timedelta) -> list[ClaimOutcome]:
        with self.db.begin() as conn:
            return ledger_ops.claim_many(conn, claims, now=utcnow(), lease=lease)

    def ledger_state(self, sink: str, key: str) -> str | None:
        with self.db.begin(read_only=True) as conn:
            return ledger_ops.state(conn, sink, key)

    # -- settle a batch --------------------------------------------------------------------------
    def settle(self, batch: Settlement) -> None:
        """Journal + ledger outcomes + dead letters of a batch, atomically.

        Data the database refuses (PostgreSQL rejects NUL characters in text and JSON, and
        over-long values in bounded columns) must not wedge the worker: the batch is written
        again with such values made storable (NUL as U+FFFD, long values cut and marked), so
        the dead letter exists, readable, instead of a redelivery loop.
        """
        batch = self._redacted(batch)
        try:
            self._settle(batch)
        except DBAPIError as exc:
            log.warning("store.refused_batch", error=str(exc.orig or exc).splitlines()[0],
                        hint="writing it again with unstorable characters replaced")
            self._settle(storable(batch))

    def _redacted(self, batch: Settlement) -> Settlement:
        hide = self.redaction
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
        return Settlement(journal=journal_rows, done=batch.done, failed=batch.failed,
                          dead=letters, unmark=batch.unmark)

    def _settle(self, batch: Settlement) -> None:
        now = utcnow()
        with self.db.begin() as conn:
            if batch.journal:
                conn.execute(insert(journal), [e.row() for e in batch.journal])
            ledger_ops.complete(conn, batch.done, now=now)
            ledger_ops.release(conn, batch.failed, now=now)
            for letter in batch.dead:
                history = self._attempt_history(conn, letter.envelope["id"], letter.route)
                stmt = self._insert(dead_letters).values(**letter.row(history))
                conn.execute(stmt.on_conflict_do_nothing(
                    index_elements=["envelope_id", "route"]))
            marker_ops.remove(conn, batch.unmark)

    # -- crash markers (see store/markers.py) ----------------------------------------------------
    def mark_executing(self, row: str, keys: Sequence[tuple[str, str]], owner: str) -> None:
        """Record (one row, id ``row``) that ``owner`` is about to execute these (route,
        envelope id) pairs; ``Settlement.unmark`` removes it."""
        if keys:
            with self.db.begin() as conn:
                marker_ops.add(conn, self.db.dialect, row, keys, owner, utcnow())

    def crash_markers(self, keys: Sequence[tuple[str, str]],
                      me: str) -> dict[tuple[str, str], CrashMarker]:
        """Markers other owners than ``me`` left for these (route, envelope id) pairs."""
        if not keys:
            return {}
        with self.db.begin(read_only=True) as conn:
            return marker_ops.find(conn, keys, me)

    def take_over_marker(self, marker: CrashMarker, owner: str, crashes: int,
                         history: list[dict[str, Any]]) -> str:
        """``owner`` runs a message a dead worker left marked, alone (counted ``crashes``);
        returns the id of the message's own marker row."""
        with self.db.begin() as conn:
            return marker_ops.take_over(conn, self.db.dialect, marker, owner, crashes, history,
                                        utcnow())

    def _insert(self, table: Any) -> Any:
        return dialect_insert(self.db.dialect, table)

    @staticmethod
    def _attempt_history(conn: Any, envelope_id: str, route: str | None) -> list[dict[str, Any]]:
        rows = conn.execute(
            select(journal.c.attempt, journal.c.at, journal.c.detail, journal.c.sink)
            .where(journal.c.envelope_id == envelope_id, journal.c.event == "retried",
                   journal.c.route == route)
            .order_by(journal.c.id)).all()
        return [{"attempt": r.attempt, "at": _iso(r.at), "sink": r.sink, **(r.detail or {})}
                for r in rows]

    # -- journal -------------------------------------------------------------------------------
    def journal_for(self, envelope_id: str) -> list[dict[str, Any]]:
        """An envelope's journal, oldest first, plus the events of envelopes it caused."""
        with self.db.begin(read_only=True) as conn:
            rows = conn.execute(select(journal).where(journal.c.envelope_id == envelope_id)
                                .order_by(journal.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def lineage(self, envelope_id: str) -> dict[str, list[dict[str, Any]]]:
        """The envelopes that led to ``envelope_id`` (``ancestors``, oldest first) and those
        it caused (``descendants``), each with its type, routes and events."""
        with self.db.begin(read_only=True) as conn:
            return {"ancestors": lineage_ops.summaries(
                        conn, lineage_ops.ancestors(conn, envelope_id)),
                    "descendants": lineage_ops.summaries(
                        conn, lineage_ops.descendants(conn, envelope_id))}

    def envelopes_of_key(self, key: str) -> list[dict[str, Any]]:
        """Every envelope of one business key and the flows they belong to (see
        :func:`integration_bus.store.lineage.envelopes_of_key`), with types, routes, events."""
        with self.db.begin(read_only=True) as conn:
            return lineage_ops.summaries(conn, lineage_ops.envelopes_of_key(conn, key))

    def count_events(self, event: str, route: str | None = None) -> int:
        where = [journal.c.event == event]
        if route is not None:
            where.append(journal.c.route == route)
        with self.db.begin(read_only=True) as conn:
            return int(conn.execute(select(func.count()).where(*where)).scalar_one())

    def route_summary(self) -> dict[str, dict[str, int]]:
        """Per route, distinct envelopes by fate: received, delivered, filtered, dead_lettered,
        retried (ever), duplicate (sink deliveries suppressed by the ledger)."""
        events = ("received", "filtered", "dead_lettered", "retried", "duplicate")
        with self.db.begin(read_only=True) as conn:
            rows = conn.execute(
                select(journal.c.route, journal.c.event,
                       func.count(journal.c.envelope_id.distinct()))
                .where(journal.c.route.is_not(None), journal.c.event.in_(events))
                .group_by(journal.c.route, journal.c.event)).all()
            dead = select(journal.c.envelope_id).where(journal.c.event == "dead_lettered")
            delivered = conn.execute(
                select(journal.c.route, func.count(journal.c.envelope_id.distinct()))
                .where(journal.c.event.in_(("delivered", "duplicate")),
                       journal.c.envelope_id.not_in(dead))
                .group_by(journal.c.route)).all()
        out: dict[str, dict[str, int]] = {}
        for route, event, count in rows:
            out.setdefault(route, {})[event] = int(count)
        for route, count in delivered:
            out.setdefault(route, {})["delivered"] = int(count)
        return out

    def waiting_retry(self) -> dict[str, int]:
        """Per route, envelopes whose latest journal event is 'retried' (waiting in a tier)."""
        later = journal.alias("later")
        newer = select(later.c.id).where(later.c.envelope_id == journal.c.envelope_id,
                                         later.c.id > journal.c.id).exists()
        with self.db.begin(read_only=True) as conn:
            rows = conn.execute(select(journal.c.route, func.count())
                                .where(journal.c.event == "retried", ~newer)
                                .group_by(journal.c.route)).all()
        return {route: int(n) for route, n in rows}

    # -- dead letters --------------------------------------------------------------------------
    def dead_letters(self, *, route: str | None = None, status: str | None = None,
                     limit: int = 1000) -> list[dict[str, Any]]:
        with self.db.begin(read_only=True) as conn:
            return dead_letter_ops.listing(conn, route=route, status=status, limit=limit)

    def dead_letter_counts(self) -> dict[str, int]:
        with self.db.begin(read_only=True) as conn:
            return dead_letter_ops.waiting_by_route(conn)

    def dead_letter_groups(self) -> list[tuple[str, str, int]]:
        """(route, group, count) of dead letters waiting (see ``store/gauges.py``)."""
        with self.db.begin(read_only=True) as conn:
            return gauges.dead_letter_groups(conn)

    def source_rejections(self, *, newest: int = 3) -> list[gauges.Rejections]:
        """Input sources refused, per source and reason (see ``store/gauges.py``)."""
        with self.db.begin(read_only=True) as conn:
            return gauges.source_rejections(conn, newest=newest)

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self.settle(Settlement(dead=list(letters)))

    # -- outbox --------------------------------------------------------------------------------
    def outbox_add(self, items: Sequence[OutboxItem], *, reason: str) -> None:
        """Queue envelopes for the relay, in one transaction."""
        with self.db.begin() as conn:
            outbox_ops.add(conn, items, reason=reason, now=utcnow())

    def outbox_claim(self, relay: str, *, limit: int = 500,
                     lease: timedelta = timedelta(seconds=60),
                     dead_letter_ids: Sequence[str] | None = None) -> list[OutboxRow]:
        with self.db.begin() as conn:
            return outbox_ops.claim(conn, relay, limit=limit, now=utcnow(), lease=lease,
                                    dead_letter_ids=dead_letter_ids)

    def outbox_done(self, rows: Sequence[OutboxRow], *, error: str | None = None) -> None:
        error = self.redaction.text(error, unmask=True)
        with self.db.begin() as conn:
            outbox_ops.done(conn, rows, now=utcnow(), error=error)

    def outbox_unroutable(self, row: OutboxRow, failure: BusError | str) -> None:
        """No route takes a row's message, or it cannot travel (any PermanentError of the
        publish): settle the row and keep the message as a dead letter (a replay's dead letter
        goes back to 'new', with the reason, to be redirected or fixed)."""
        kind = failure.error_type if isinstance(failure, BusError) else "UnroutableError"
        reason = "unroutable" if kind == "UnroutableError" else "unpublishable"
        error = self.redaction.text(str(failure), unmask=True) or ""
        now = utcnow()
        with self.db.begin() as conn:
            outbox_ops.done(conn, [row], now=now, error=error)
            if row.dead_letter_id:
                conn.execute(update(dead_letters).where(dead_letters.c.id == row.dead_letter_id,
                                                        dead_letters.c.status == "replaying")
                             .values(status="new", status_reason=f"replay {reason}: {error}",
                                     updated_at=now))
                return
            letter = DeadLetter(id=new_id(), envelope=row.envelope.to_dict(), route=None,
                                reason=reason, error_type=kind,
                                message=error, failed_at=now, step="outbox",
                                source_ref=row.envelope.headers.get("source_ref"))
            conn.execute(insert(journal).values(**JournalEntry(
                row.envelope.id, "dead_lettered", now, detail={"reason": reason}).row()))
            conn.execute(self._insert(dead_letters).values(**letter.row([]))
                         .on_conflict_do_nothing(index_elements=["envelope_id", "route"]))

    def outbox_release(self, rows: Sequence[OutboxRow]) -> None:
        with self.db.begin() as conn:
            outbox_ops.release(conn, rows)

    def outbox_pending(self, dead_letter_ids: Sequence[str] | None = None) -> dict[str, int]:
        """Unpublished outbox rows by holder (``""``: unclaimed), optionally of some dead
        letters only."""
        with self.db.begin(read_only=True) as conn:
            return outbox_ops.pending(conn, dead_letter_ids)

    def outbox_waiting(self) -> int:
        """Rows not yet published (claimed or not)."""
        with self.db.begin(read_only=True) as conn:
            return int(conn.execute(select(func.count()).where(
                outbox.c.published_at.is_(None))).scalar_one())

    def purge_history(self, older_than: timedelta) -> dict[str, int]:
        """Retention: journal rows, published outbox rows, seen keys, done ledger entries and
    crash markers older than the age."""
        cutoff = utcnow() - older_than
        with self.db.begin() as conn:
            counts = {
                "journal": conn.execute(delete(journal).where(journal.c.at < cutoff)).rowcount,
                "outbox": conn.execute(delete(outbox).where(
                    outbox.c.published_at.is_not(None),
                    outbox.c.published_at < cutoff)).rowcount,
                "seen_keys": conn.execute(delete(seen_keys).where(
                    seen_keys.c.at < cutoff)).rowcount,
                # the ledger forgets deliveries older than the retention: a replay of something
                # older is delivered again (with the same key, for the target to deduplicate)
                "ledger": conn.execute(delete(ledger).where(
                    ledger.c.state == "done", ledger.c.done_at < cutoff)).rowcount,
                # marks that outlived every redelivery of their messages (e.g. the broker's
                # delivery limit took one): nothing will ever run them again
                "crash_markers": conn.execute(delete(crash_markers).where(
                    crash_markers.c.started_at < cutoff)).rowcount,
            }
        return {k: int(v or 0) for k, v in counts.items()}

    def stage(self, items: Sequence[OutboxItem], *, reason: str,
              cursor: tuple[str, str] | None = None) -> None:
        """Outbox rows and a cursor update in one transaction (polling sources)."""
        with self.db.begin() as conn:
            outbox_ops.add(conn, items, reason=reason, now=utcnow())
            if cursor is not None:
                cursor_ops.set_value(conn, *cursor, now=utcnow())

    def try_lease(self, name: str, owner: str, lease: timedelta) -> bool:
        """Take (or renew) the lease ``name`` for ``owner`` unless someone else holds a live one.
        Leases live in the cursor table under ``lease:``; ``release_lease`` gives it back."""
        with self.db.begin() as conn:
            return cursor_ops.try_lease(conn, name, owner, lease, now=utcnow())

    def release_lease(self, name: str, owner: str) -> None:
        with self.db.begin() as conn:
            cursor_ops.release_lease(conn, name, owner)

    # -- seen keys (connector-level deduplication) ------------------------------------------------
    def seen(self, namespace: str, keys: Sequence[str]) -> dict[str, str | None]:
        """Which of ``keys`` were remembered before, with the envelope id they produced."""
        if not keys:
            return {}
        with self.db.begin(read_only=True) as conn:
            return cursor_ops.seen(conn, namespace, keys)

    def remember(self, namespace: str, items: Sequence[tuple[str, str | None]]) -> None:
        """Remember (key, envelope id) pairs; remembering a key again changes nothing."""
        if not items:
            return
        with self.db.begin() as conn:
            cursor_ops.remember(conn, namespace, items, now=utcnow())

    # -- cursors -------------------------------------------------------------------------------
    def cursor_get(self, key: str) -> str | None:
        with self.db.begin(read_only=True) as conn:
            return cursor_ops.get(conn, key)

    def cursor_set(self, key: str, value: str) -> None:
        with self.db.begin() as conn:
            cursor_ops.set_value(conn, key, value, now=utcnow())


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
    """The same settlement with values every database accepts (see ``Store.settle``)."""
    journal_rows = [dataclasses.replace(e, **{k: _clean(getattr(e, k), n) for k, n in
                                               _LIMITS.items() if hasattr(e, k)},
                                        detail=_clean(e.detail)) for e in batch.journal]
    letters = [dataclasses.replace(d, envelope=_clean(d.envelope), message=_clean(d.message),
                                   traceback=_clean(d.traceback), attempts=_clean(d.attempts),
                                   source_ref=_clean(d.source_ref),
                                   route=_clean(d.route, 128), step=_clean(d.step, 128),
                                   sink=_clean(d.sink, 128),
                                   error_type=_clean(d.error_type, 128)) for d in batch.dead]
    return Settlement(journal=journal_rows, done=batch.done, failed=batch.failed, dead=letters,
                      unmark=batch.unmark)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()
