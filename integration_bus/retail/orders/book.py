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

from sqlalchemy import bindparam, func, insert, select, update

from integration_bus.errors import TransientError
from integration_bus.retail.orders.saga import Saga, decide_for_person
from integration_bus.store import Store, utcnow
from integration_bus.store import ledger as ledger_ops
from integration_bus.store.database import dialect_insert
from integration_bus.store.schema import order_saga_events as events
from integration_bus.store.schema import order_sagas as sagas

__all__ = ["Entry", "SagaBook", "SagaConflict", "SagaRecord", "TimelineEntry"]

_LEASE = timedelta(minutes=5)


class SagaConflict(TransientError):
    """Another copy moved the saga since it was read: retry from the stored state."""


class _Moved(Exception):
    """A batch save found a saga moved on: roll back, save one by one."""


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


def _record(row: Any) -> SagaRecord:
    return SagaRecord(Saga.from_json(row.data), row.version, row.state, row.outcome,
                      row.reason, row.started_at, row.updated_at, row.final_at)


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
            stmt = dialect_insert(conn.dialect.name, sagas).values(
                order_id=saga.order_id, version=1, state=_state(saga), channel=saga.channel,
                data=saga.to_json(), started_at=now, updated_at=now
            ).on_conflict_do_nothing().returning(sagas.c.order_id)
            created = conn.execute(stmt).first() is not None
            if created:
                conn.execute(insert(events).values(
                    order_id=saga.order_id, version=1, at=now, step="start", decision="started",
                    reason=f"{len(saga.lines)} line(s), channel {saga.channel}", detail=None))
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
            stmt = dialect_insert(conn.dialect.name, sagas).on_conflict_do_nothing() \
                .returning(sagas.c.order_id)
            created = {row.order_id for row in conn.execute(stmt, [
                {"order_id": saga.order_id, "version": 1, "state": _state(saga),
                 "channel": saga.channel, "data": d, "started_at": now, "updated_at": now}
                for (saga, _), d in zip(items, data, strict=True)])}
            fresh: dict[str, int] = {}  # order -> the item that created it (the first copy)
            for index, (saga, _) in enumerate(items):
                if saga.order_id in created:
                    fresh.setdefault(saga.order_id, index)
            if fresh:
                conn.execute(insert(events), [
                    {"order_id": items[i][0].order_id, "version": 1, "at": now,
                     "step": "start", "decision": "started",
                     "reason": f"{len(items[i][0].lines)} line(s), channel "
                               f"{items[i][0].channel}", "detail": None}
                    for i in fresh.values()])
            claims = [c for i in fresh.values() for c in items[i][1]]
            outcomes = iter(ledger_ops.claim_many(conn, claims, now=now, lease=_LEASE))
            existed = {row.order_id: row for row in conn.execute(select(sagas).where(
                sagas.c.order_id.in_({s.order_id for s, _ in items} - set(fresh))))}
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
        rows: list[dict[str, Any]] = []
        for record, saga, entries, _, _ in saves:
            state = _state(saga)
            rows.append({"b_id": saga.order_id, "b_version": record.version,
                         "version": record.version + 1, "state": state,
                         "outcome": saga.outcome, "data": saga.to_json(),
                         "reason": entries[-1].reason if state != "running" else None,
                         "updated_at": now, "final_at": now if state == "final" else None})
        try:
            with self._writing, self.store.db.begin() as conn:
                if not conn.dialect.supports_sane_multi_rowcount:
                    raise _Moved()  # it cannot tell which moved: one by one
                moved = conn.execute(update(sagas).where(
                    sagas.c.order_id == bindparam("b_id"),
                    sagas.c.version == bindparam("b_version")), rows).rowcount
                if moved != len(rows):
                    raise _Moved()
                conn.execute(insert(events), [
                    {"order_id": saga.order_id, "version": record.version + 1, "at": now,
                     "step": e.step, "decision": e.decision, "reason": e.reason,
                     "detail": e.detail}
                    for record, saga, entries, _, _ in saves for e in entries])
                ledger_ops.complete(conn, [c for *_, settle, _ in saves for c in settle],
                                    now=now)
                ledger_ops.release(conn, [c for *_, failed in saves for c in failed], now=now)
        except _Moved:
            return [self._save_one(*save) for save in saves]
        return [SagaRecord(saga, row["version"], row["state"], saga.outcome, row["reason"],
                           record.started_at, now, row["final_at"])
                for (record, saga, *_), row in zip(saves, rows, strict=True)]

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
            row = conn.execute(select(sagas).where(sagas.c.order_id == order_id)).first()
        return None if row is None else _record(row)

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
            moved = conn.execute(
                update(sagas)
                .where(sagas.c.order_id == saga.order_id, sagas.c.version == record.version)
                .values(version=version, state=state, outcome=saga.outcome, data=saga.to_json(),
                        reason=reason if state != "running" else None, updated_at=now,
                        final_at=final_at)
                .returning(sagas.c.version)).first()
            if moved is None:
                raise SagaConflict(f"order {saga.order_id}: the saga moved on since version "
                                   f"{record.version}", order_id=saga.order_id)
            conn.execute(insert(events), [
                {"order_id": saga.order_id, "version": version, "at": now, "step": e.step,
                 "decision": e.decision, "reason": e.reason, "detail": e.detail}
                for e in entries])
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
            rows = conn.execute(select(events).where(events.c.order_id == order_id)
                                .order_by(events.c.id)).all()
        return [TimelineEntry(r.at, r.version, r.step, r.decision, r.reason, r.detail)
                for r in rows]

    def list(self, *, state: str | None = None, outcome: str | None = None,
             limit: int = 100) -> list[SagaRecord]:
        query = select(sagas).order_by(sagas.c.started_at, sagas.c.order_id).limit(limit)
        if state is not None:
            query = query.where(sagas.c.state == state)
        if outcome is not None:
            query = query.where(sagas.c.outcome == outcome)
        with self.store.db.begin(read_only=True) as conn:
            rows = conn.execute(query).all()
        return [SagaRecord(Saga.from_json(r.data), r.version, r.state, r.outcome, r.reason,
                           r.started_at, r.updated_at, r.final_at) for r in rows]

    def counts(self) -> dict[str, int]:
        """Sagas per state and per outcome (``state:final``, ``outcome:re_sourced``, ...)."""
        out: dict[str, int] = {}
        with self.store.db.begin(read_only=True) as conn:
            for column in (sagas.c.state, sagas.c.outcome):
                for value, count in conn.execute(select(column, func.count()).group_by(column)):
                    if value is not None:
                        out[f"{column.name}:{value}"] = int(count)
        return out
