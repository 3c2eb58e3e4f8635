"""The saga store: one row per order (``order_sagas``), versioned, and its timeline.

Every save is a compare-and-set on the version the saga was read at: two copies of one order
working at once (a redelivery racing the first delivery) cannot both move it — the loser gets
:class:`SagaConflict`, a TransientError, and is retried from the fresh state. A save settles the
idempotency-ledger claims of the step it records in the same transaction, so "the ledger says
done" always means "the saga has recorded it".
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from integration_bus.errors import TransientError
from integration_bus.retail.orders.saga import Saga, decide_for_person
from integration_bus.store import Store, sagas, utcnow
from integration_bus.store import ledger as ledger_ops

__all__ = ["Entry", "SagaBook", "SagaConflict", "SagaRecord", "TimelineEntry"]

_LEASE = timedelta(minutes=5)


class SagaConflict(TransientError):
    """Another copy moved the saga since it was read: retry from the stored state."""


@dataclass(frozen=True)
class SagaRecord:
    saga: Saga
    version: int
    state: str
    outcome: str | None
    reason: str | None
    started_at: datetime
    updated_at: datetime
    final_at: datetime | None

    def age_seconds(self) -> float:
        """From the saga's start to its last save (SQLite hands back naive UTC times)."""
        start, end = (t.replace(tzinfo=None) for t in (self.started_at, self.updated_at))
        return max(0.0, (end - start).total_seconds())


@dataclass(frozen=True)
class Entry:
    """One step of the timeline as it is saved."""

    step: str
    decision: str
    reason: str
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    version: int
    step: str
    decision: str
    reason: str
    detail: dict[str, Any] | None


def _first_step(saga: Saga) -> sagas.Step:
    return sagas.Step("start", "started", f"{len(saga.lines)} line(s), channel {saga.channel}")


class _Moved(Exception):
    """A batch save found a saga moved on: roll back, save one by one."""


def _state(saga: Saga) -> str:
    return {"final": "final", "waiting": "waiting"}.get(saga.phase, "running")


class SagaBook:
    """Reads and compare-and-sets sagas in the bus's store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # One writer at a time from this process: lanes writing at once would meet SQLite's
        # busy handler (sleeps of up to 100 ms) instead of a short queue here.
        self._writing = threading.Lock()

    def start(self, saga: Saga) -> SagaRecord:
        """The stored saga of ``saga.order_id``, created from ``saga`` if there is none."""
        record, _ = self.start_claiming(saga, ())
        return record

    def start_claiming(self, saga: Saga, claims: Sequence[ledger_ops.Claim]
                       ) -> tuple[SagaRecord, list[ledger_ops.ClaimOutcome] | None]:
        """:meth:`start`; when the saga is created now, ``claims`` (its first effects) are
        made in the same transaction and their outcomes returned (None when the saga
        existed)."""
        now = utcnow()
        outcome = None
        with self._writing, self.store.db.begin() as conn:
            created = sagas.create(
                conn, order_id=saga.order_id, state=_state(saga), channel=saga.channel,
                data=saga.to_json(), now=now, first=_first_step(saga))
            if created:
                outcome = ledger_ops.claim_many(conn, claims, now=now, lease=_LEASE)
        if created:  # what was just written: no need to read it back
            return SagaRecord(Saga.from_json(saga.to_json()), 1, _state(saga), None, None, now,
                              now, None), outcome
        record = self.get(saga.order_id)
        assert record is not None
        return record, None

    def start_many(self, items: Sequence[tuple[Saga, Sequence[ledger_ops.Claim]]]
                   ) -> list[tuple[SagaRecord, list[ledger_ops.ClaimOutcome] | None]]:
        """:meth:`start_claiming` of a worker batch's sagas in one transaction (a statement
        each for the sagas, their start entries and their claims)."""
        now = utcnow()
        data = [saga.to_json() for saga, _ in items]
        with self._writing, self.store.db.begin() as conn:
            created = sagas.create_many(conn, [
                sagas.NewSaga(saga.order_id, _state(saga), saga.channel, d, _first_step(saga))
                for (saga, _), d in zip(items, data, strict=True)], now=now)
            fresh: dict[str, int] = {}  # order -> the item that created it (the first copy)
            for index, (saga, _) in enumerate(items):
                if saga.order_id in created:
                    fresh.setdefault(saga.order_id, index)
            claims = [c for i in fresh.values() for c in items[i][1]]
            outcomes = iter(ledger_ops.claim_many(conn, claims, now=now, lease=_LEASE))
            existed = sagas.get_many(conn, {s.order_id for s, _ in items} - set(fresh))
        out: list[tuple[SagaRecord, list[ledger_ops.ClaimOutcome] | None]] = []
        for index, (saga, claims_of) in enumerate(items):
            if fresh.get(saga.order_id) == index:
                out.append((SagaRecord(Saga.from_json(data[index]), 1, _state(saga), None, None,
                                       now, now, None), [next(outcomes) for _ in claims_of]))
            elif saga.order_id in existed:
                out.append((_record(existed[saga.order_id]), None))
            else:  # a second copy of an order created by the first one in this batch
                out.append((SagaRecord(Saga.from_json(data[index]), 1, _state(saga), None,
                                       None, now, now, None), None))
        return out

    def save_many(self, saves: Sequence[tuple[SagaRecord, Saga, Sequence[Entry],
                                              Sequence[tuple[str, str, str]],
                                              Sequence[tuple[str, str, str]]]]
                  ) -> list[SagaRecord | SagaConflict]:
        """:meth:`save_steps` of several sagas (record, saga, entries, settle, failed) in one
        transaction: a statement each for the sagas (compare-and-set), their timeline and
        their claims. When a saga moved on meanwhile (rare: a redelivered copy), the batch is
        saved saga by saga instead, that one a SagaConflict in its place."""
        now = utcnow()
        moves: list[sagas.Move] = []
        for record, saga, entries, _, _ in saves:
            state = _state(saga)
            moves.append(sagas.Move(
                saga.order_id, record.version, state, saga.outcome,
                entries[-1].reason if state != "running" else None, saga.to_json(),
                now if state == "final" else None,
                [sagas.Step(e.step, e.decision, e.reason, e.detail) for e in entries]))
        try:
            with self._writing, self.store.db.begin() as conn:
                if not sagas.move_many(conn, moves, now=now):
                    raise _Moved()  # rolls back what was written: one by one instead
                ledger_ops.complete(conn, [c for *_, settle, _ in saves for c in settle],
                                    now=now)
                ledger_ops.release(conn, [c for *_, failed in saves for c in failed], now=now)
        except _Moved:
            return [self._save_one(*save) for save in saves]
        return [SagaRecord(saga, move.from_version + 1, move.state, saga.outcome, move.reason,
                           record.started_at, now, move.final_at)
                for (record, saga, *_), move in zip(saves, moves, strict=True)]

    def _save_one(self, record: SagaRecord, saga: Saga, entries: Sequence[Entry],
                  settle: Sequence[tuple[str, str, str]],
                  failed: Sequence[tuple[str, str, str]]) -> SagaRecord | SagaConflict:
        try:
            saved, _ = self.save_steps(record, saga, entries, settle=settle, failed=failed)
        except SagaConflict as exc:
            return exc
        return saved

    def get(self, order_id: str) -> SagaRecord | None:
        with self.store.db.begin(read_only=True) as conn:
            row = sagas.get(conn, order_id)
        return _record(row) if row is not None else None

    def save(self, record: SagaRecord, saga: Saga, *, step: str, decision: str, reason: str,
             detail: dict[str, Any] | None = None,
             settle: Sequence[tuple[str, str, str]] = (),
             failed: Sequence[tuple[str, str, str]] = ()) -> SagaRecord:
        """:meth:`save_steps` of one timeline entry."""
        saved, _ = self.save_steps(record, saga, [Entry(step, decision, reason, detail)],
                                   settle=settle, failed=failed)
        return saved

    def save_steps(self, record: SagaRecord, saga: Saga, entries: Sequence[Entry], *,
                   settle: Sequence[tuple[str, str, str]] = (),
                   failed: Sequence[tuple[str, str, str]] = (),
                   claim: ledger_ops.Claim | None = None
                   ) -> tuple[SagaRecord, ledger_ops.ClaimOutcome | None]:
        """Store ``saga`` as version + 1 if it is still at ``record.version`` (else
        SagaConflict) with its timeline ``entries``, in one transaction with: ledger claims
        (sink, key, owner) settled as done (``settle``) or failed (``failed``), and the claim of
        the next step's effect (``claim``; its outcome is returned)."""
        assert entries, "a save records at least one step"
        now = utcnow()
        version = record.version + 1
        state = _state(saga)
        final_at = now if state == "final" else None
        reason = entries[-1].reason
        outcome = None
        with self._writing, self.store.db.begin() as conn:
            moved = sagas.move(
                conn, order_id=saga.order_id, from_version=record.version, state=state,
                outcome=saga.outcome, reason=reason if state != "running" else None,
                data=saga.to_json(), now=now, final_at=final_at,
                steps=[sagas.Step(e.step, e.decision, e.reason, e.detail) for e in entries])
            if not moved:
                raise SagaConflict(f"order {saga.order_id}: the saga moved on since version "
                                   f"{record.version}", order_id=saga.order_id)
            ledger_ops.complete(conn, list(settle), now=now)
            ledger_ops.release(conn, list(failed), now=now)
            if claim is not None:
                (outcome,) = ledger_ops.claim_many(conn, [claim], now=now, lease=_LEASE)
        return SagaRecord(saga, version, state, saga.outcome,
                          reason if state != "running" else None, record.started_at, now,
                          final_at), outcome

    def decide(self, order_id: str, decision: str) -> SagaRecord:
        """A person's choice for a waiting order (``bus orders decide``); ValueError if there
        is no such order, it does not wait, or the choice is not offered. Replaying its dead
        letter then continues the saga from there."""
        record = self.get(order_id)
        if record is None:
            raise ValueError(f"no saga for order {order_id!r}")
        saga = Saga.from_json(record.saga.to_json())
        reason = decide_for_person(saga, decision)
        return self.save(record, saga, step="person", decision=decision, reason=reason)

    def claim(self, claim: ledger_ops.Claim) -> ledger_ops.ClaimOutcome:
        """Claim a step's effect in the idempotency ledger on its own (see :meth:`save_steps`
        for a claim made with a save)."""
        with self._writing, self.store.db.begin() as conn:
            (outcome,) = ledger_ops.claim_many(conn, [claim], now=utcnow(), lease=_LEASE)
        return outcome

    def timeline(self, order_id: str) -> list[TimelineEntry]:
        with self.store.db.begin(read_only=True) as conn:
            steps = sagas.timeline(conn, order_id)
        return [TimelineEntry(r.at, r.version, r.step, r.decision, r.reason, r.detail)
                for r in steps]

    def list(self, *, state: str | None = None, outcome: str | None = None,
             limit: int = 100) -> list[SagaRecord]:
        with self.store.db.begin(read_only=True) as conn:
            found = sagas.rows(conn, state=state, outcome=outcome, limit=limit)
        return [_record(r) for r in found]

    def counts(self) -> dict[str, int]:
        """Sagas per state and per outcome (``state:final``, ``outcome:re_sourced``, ...)."""
        with self.store.db.begin(read_only=True) as conn:
            return sagas.counts(conn)


def _record(row: sagas.SagaRow) -> SagaRecord:
    return SagaRecord(Saga.from_json(row.data), row.version, row.state, row.outcome,
                      row.reason, row.started_at, row.updated_at, row.final_at)
