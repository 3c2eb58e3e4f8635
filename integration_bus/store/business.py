"""Reads for the console's business pages: order aging to the ERP sales order, reservation
failures, dead-letter growth, and connector events of the journal (the stores' files, the last
reconcile). Read-only; the callers (``web/console``) never write SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from integration_bus.store.schema import dead_letters, journal, order_saga_events, order_sagas

__all__ = ["connector_events", "dead_letters_since", "last_event", "reservation_failures",
           "sales_order_ages"]


def _aware_gap(start: datetime, end: datetime) -> float:
    # SQLite hands back naive UTC times, PostgreSQL aware ones: compare them alike
    return max(0.0, (end.replace(tzinfo=None) - start.replace(tzinfo=None)).total_seconds())


def sales_order_ages(conn: Connection, since: datetime, *, limit: int = 10_000) -> list[float]:
    """Seconds from each order's start (the accepted web order) to its ERP sales order (the
    saga's first ``sales_order`` step done), for orders started since ``since`` (newest
    ``limit``)."""
    e = order_saga_events.c
    first = (select(e.order_id, func.min(e.at).label("at"))
             .where(e.step == "sales_order", e.decision == "done")
             .group_by(e.order_id).subquery())
    rows = conn.execute(select(order_sagas.c.started_at, first.c.at)
                        .join(first, first.c.order_id == order_sagas.c.order_id)
                        .where(order_sagas.c.started_at >= since)
                        .order_by(order_sagas.c.started_at.desc()).limit(limit)).all()
    return [_aware_gap(started, done) for started, done in rows]


def reservation_failures(conn: Connection, since: datetime) -> int:
    """Reservations the ERP refused (``reserve`` steps decided ``short``) since ``since``."""
    e = order_saga_events.c
    return int(conn.execute(select(func.count()).where(
        e.step == "reserve", e.decision == "short", e.at >= since)).scalar() or 0)


def dead_letters_since(conn: Connection, since: datetime) -> int:
    """Dead letters stored since ``since`` (whatever their status now)."""
    return int(conn.execute(select(func.count()).where(
        dead_letters.c.created_at >= since)).scalar() or 0)


def connector_events(conn: Connection, events: Sequence[str], since: datetime, *,
                     limit: int = 1000) -> list[dict[str, Any]]:
    """Journal events about connectors (``pos_file.quarantined``, ...), newest first."""
    rows = conn.execute(select(journal.c.event, journal.c.at, journal.c.detail)
                        .where(journal.c.event.in_(list(events)), journal.c.at >= since)
                        .order_by(journal.c.id.desc()).limit(limit)).all()
    return [{"event": event, "at": at, "detail": detail or {}} for event, at, detail in rows]


def last_event(conn: Connection, event: str) -> dict[str, Any] | None:
    """The newest journal event named ``event`` (its time and detail), or None."""
    row = conn.execute(select(journal.c.at, journal.c.detail).where(journal.c.event == event)
                       .order_by(journal.c.id.desc()).limit(1)).first()
    return None if row is None else {"at": row.at, "detail": row.detail or {}}
