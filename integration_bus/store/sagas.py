"""The order sagas' tables (``integration_bus.retail.orders``): one versioned row per order,
and its timeline of steps.

A saga row moves only by compare-and-set on the version it was read at (:func:`move`), so two
copies of one order working at once cannot both move it. Every function runs inside the
caller's transaction, so the book can settle ledger claims in the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from integration_bus.store.database import dialect_insert
from integration_bus.store.schema import order_saga_events as events
from integration_bus.store.schema import order_sagas as sagas

__all__ = ["Move", "NewSaga", "SagaRow", "Step", "StepRow", "counts", "create", "create_many",
           "get", "get_many", "move", "move_many", "rows", "timeline"]


@dataclass(frozen=True, slots=True)
class SagaRow:
    order_id: str
    version: int
    state: str
    outcome: str | None
    reason: str | None
    data: Any
    started_at: datetime
    updated_at: datetime
    final_at: datetime | None


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a saga's timeline as it is written."""

    step: str
    decision: str
    reason: str
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StepRow:
    """One step of a saga's timeline as stored."""

    at: datetime
    version: int
    step: str
    decision: str
    reason: str
    detail: dict[str, Any] | None


def create(conn: Connection, *, order_id: str, state: str, channel: str, data: Any,
           now: datetime, first: Step) -> bool:
    """Store a saga at version 1 with its ``first`` step, unless ``order_id`` has one already;
    whether it was created."""
    stmt = dialect_insert(conn.dialect.name, sagas).values(
        order_id=order_id, version=1, state=state, channel=channel, data=data, started_at=now,
        updated_at=now).on_conflict_do_nothing().returning(sagas.c.order_id)
    if conn.execute(stmt).first() is None:
        return False
    _steps(conn, order_id, 1, now, [first])
    return True


@dataclass(frozen=True, slots=True)
class NewSaga:
    """A saga to store at version 1 (:func:`create_many`)."""

    order_id: str
    state: str
    channel: str
    data: Any
    first: Step


def create_many(conn: Connection, new: Sequence[NewSaga], *, now: datetime) -> set[str]:
    """:func:`create` of many sagas in one statement each for the rows and their first steps;
    the order ids created now (an order stored already, or a second copy of one in ``new``,
    is left as it is; the first copy's ``first`` step is written)."""
    if not new:
        return set()
    stmt = dialect_insert(conn.dialect.name, sagas).on_conflict_do_nothing() \
        .returning(sagas.c.order_id)
    created = {row.order_id for row in conn.execute(stmt, [
        {"order_id": n.order_id, "version": 1, "state": n.state, "channel": n.channel,
         "data": n.data, "started_at": now, "updated_at": now} for n in new])}
    firsts: dict[str, NewSaga] = {}
    for n in new:
        if n.order_id in created:
            firsts.setdefault(n.order_id, n)
    if firsts:
        conn.execute(insert(events), [
            {"order_id": n.order_id, "version": 1, "at": now, "step": n.first.step,
             "decision": n.first.decision, "reason": n.first.reason, "detail": n.first.detail}
            for n in firsts.values()])
    return created


@dataclass(frozen=True, slots=True)
class Move:
    """One saga's next version (:func:`move_many`)."""

    order_id: str
    from_version: int
    state: str
    outcome: str | None
    reason: str | None
    data: Any
    final_at: datetime | None
    steps: Sequence[Step]


def move_many(conn: Connection, moves: Sequence[Move], *, now: datetime) -> bool:
    """:func:`move` of many sagas, a statement each for the rows and their steps; False when
    any of them moved on meanwhile, or the database cannot tell (then some rows may have been
    written: the caller rolls the transaction back and moves them one by one)."""
    if not moves:
        return True
    if not conn.dialect.supports_sane_multi_rowcount:
        return False
    moved = conn.execute(update(sagas).where(
        sagas.c.order_id == bindparam("b_id"), sagas.c.version == bindparam("b_version")), [
        {"b_id": m.order_id, "b_version": m.from_version, "version": m.from_version + 1,
         "state": m.state, "outcome": m.outcome, "data": m.data, "reason": m.reason,
         "updated_at": now, "final_at": m.final_at} for m in moves]).rowcount
    if moved != len(moves):
        return False
    conn.execute(insert(events), [
        {"order_id": m.order_id, "version": m.from_version + 1, "at": now, "step": s.step,
         "decision": s.decision, "reason": s.reason, "detail": s.detail}
        for m in moves for s in m.steps])
    return True


def move(conn: Connection, *, order_id: str, from_version: int, state: str,
         outcome: str | None, reason: str | None, data: Any, now: datetime,
         final_at: datetime | None, steps: Sequence[Step]) -> bool:
    """Store version ``from_version`` + 1 of the saga, with its ``steps``, if it is still at
    ``from_version``; False (nothing written) when another copy moved it meanwhile."""
    moved = conn.execute(
        update(sagas).where(sagas.c.order_id == order_id, sagas.c.version == from_version)
        .values(version=from_version + 1, state=state, outcome=outcome, data=data,
                reason=reason, updated_at=now, final_at=final_at)
        .returning(sagas.c.version)).first()
    if moved is None:
        return False
    _steps(conn, order_id, from_version + 1, now, steps)
    return True


def _steps(conn: Connection, order_id: str, version: int, now: datetime,
           steps: Sequence[Step]) -> None:
    conn.execute(insert(events), [
        {"order_id": order_id, "version": version, "at": now, "step": s.step,
         "decision": s.decision, "reason": s.reason, "detail": s.detail} for s in steps])


def get(conn: Connection, order_id: str) -> SagaRow | None:
    row = conn.execute(select(sagas).where(sagas.c.order_id == order_id)).first()
    return _saga(row) if row is not None else None


def get_many(conn: Connection, order_ids: Sequence[str] | set[str]) -> dict[str, SagaRow]:
    if not order_ids:
        return {}
    found = conn.execute(select(sagas).where(sagas.c.order_id.in_(set(order_ids)))).all()
    return {row.order_id: _saga(row) for row in found}


def timeline(conn: Connection, order_id: str) -> list[StepRow]:
    """The steps of one saga, in the order they were written."""
    found = conn.execute(select(events).where(events.c.order_id == order_id)
                         .order_by(events.c.id)).all()
    return [StepRow(r.at, r.version, r.step, r.decision, r.reason, r.detail) for r in found]


def rows(conn: Connection, *, state: str | None = None, outcome: str | None = None,
         limit: int = 100) -> list[SagaRow]:
    """Sagas in the order they started, optionally of one state and/or outcome."""
    query = select(sagas).order_by(sagas.c.started_at, sagas.c.order_id).limit(limit)
    if state is not None:
        query = query.where(sagas.c.state == state)
    if outcome is not None:
        query = query.where(sagas.c.outcome == outcome)
    return [_saga(r) for r in conn.execute(query).all()]


def counts(conn: Connection) -> dict[str, int]:
    """Sagas per state and per outcome (``state:final``, ``outcome:re_sourced``, ...)."""
    out: dict[str, int] = {}
    for column in (sagas.c.state, sagas.c.outcome):
        for value, count in conn.execute(select(column, func.count()).group_by(column)):
            if value is not None:
                out[f"{column.name}:{value}"] = int(count)
    return out


def _saga(row: Any) -> SagaRow:
    return SagaRow(order_id=row.order_id, version=row.version, state=row.state,
                   outcome=row.outcome, reason=row.reason, data=row.data,
                   started_at=row.started_at, updated_at=row.updated_at, final_at=row.final_at)
