"""The Store: the façade the runtime and the plugin context use over the store's repositories.

Every method is one transaction and raises StoreUnavailable when the database cannot be
reached. The SQL lives in the repositories, one module per aggregate: ``journal``,
``settlement`` (a worker batch's writes), ``outbox``, ``ledger``, ``dead_letters``,
``cursors``, ``markers``, ``lineage``, ``gauges``; their functions take a ``conn`` and run
inside the caller's transaction, so a caller that needs several in one transaction opens it
(``store.db.begin()``) and calls them directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from integration_bus.errors import BusError
from integration_bus.liveness import holder_alive
from integration_bus.redact import Redaction
from integration_bus.store import cursors as cursor_ops
from integration_bus.store import dead_letters as dead_letter_ops
from integration_bus.store import gauges, settlement
from integration_bus.store import journal as journal_ops
from integration_bus.store import ledger as ledger_ops
from integration_bus.store import lineage as lineage_ops
from integration_bus.store import markers as marker_ops
from integration_bus.store import outbox as outbox_ops
from integration_bus.store.database import Database
from integration_bus.store.ledger import Claim, ClaimOutcome
from integration_bus.store.markers import CrashMarker
from integration_bus.store.outbox import OutboxItem, OutboxRow
from integration_bus.store.queue import MessageQueue
from integration_bus.store.records import DeadLetter, utcnow
from integration_bus.store.settlement import Settlement, storable

__all__ = ["Settlement", "Store", "holder_alive", "storable", "utcnow"]


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

    # -- settle a batch (see store/settlement.py) ------------------------------------------------
    def settle(self, batch: Settlement) -> None:
        """Journal + ledger outcomes + dead letters + crash-marker removals of a batch,
        atomically, redacted first; values the database refuses are made storable and written
        again (:func:`integration_bus.store.settlement.settle`)."""
        settlement.settle(self.db, batch, redaction=self.redaction)

    # -- crash markers (see store/markers.py) ----------------------------------------------------
    def mark_executing(self, row: str, keys: Sequence[tuple[str, str]], owner: str) -> None:
        """Record (one row, id ``row``) that ``owner`` is about to execute these (route,
        envelope id) pairs; ``Settlement.unmark`` removes it."""
        if keys:
            with self.db.begin() as conn:
                marker_ops.add(conn, row, keys, owner, utcnow())

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

    # -- journal (see store/journal.py) ---------------------------------------------------------
    def journal_for(self, envelope_id: str) -> list[dict[str, Any]]:
        """An envelope's journal rows, oldest first."""
        with self.db.begin(read_only=True) as conn:
            return journal_ops.entries(conn, envelope_id)

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
        with self.db.begin(read_only=True) as conn:
            return journal_ops.count_events(conn, event, route)

    def route_summary(self) -> dict[str, dict[str, int]]:
        """Per route, distinct envelopes by fate (see :func:`journal.route_summary`)."""
        with self.db.begin(read_only=True) as conn:
            return journal_ops.route_summary(conn)

    def waiting_retry(self) -> dict[str, int]:
        """Per route, envelopes whose latest journal event is 'retried' (waiting in a tier)."""
        with self.db.begin(read_only=True) as conn:
            return journal_ops.waiting_retry(conn)

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
        error = self.redaction.text(str(failure), unmask=True) or ""
        with self.db.begin() as conn:
            outbox_ops.unroutable(conn, row, kind=kind, error=error, now=utcnow())

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
            return outbox_ops.waiting(conn)

    def stage(self, items: Sequence[OutboxItem], *, reason: str,
              cursor: tuple[str, str] | None = None) -> None:
        """Outbox rows and a cursor update in one transaction (polling sources)."""
        with self.db.begin() as conn:
            outbox_ops.stage(conn, items, reason=reason, now=utcnow(), cursor=cursor)

    # -- retention -----------------------------------------------------------------------------
    def purge_history(self, older_than: timedelta) -> dict[str, int]:
        """Retention: journal rows, published outbox rows, seen keys, done ledger entries and
        crash markers older than the age, in one transaction; how many of each."""
        cutoff = utcnow() - older_than
        with self.db.begin() as conn:
            return {"journal": journal_ops.purge(conn, before=cutoff),
                    "outbox": outbox_ops.purge_published(conn, before=cutoff),
                    "seen_keys": cursor_ops.forget_seen(conn, before=cutoff),
                    "ledger": ledger_ops.forget_done(conn, before=cutoff),
                    "crash_markers": marker_ops.purge(conn, before=cutoff)}

    # -- leases --------------------------------------------------------------------------------
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

