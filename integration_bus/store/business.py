"""Reads for the console's business pages: order aging to the ERP sales order, reservation
failures, dead-letter growth, and connector events of the journal (the stores' files, the last
reconcile). Read-only; the callers (``web/console``) never write SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from integration_bus.store.schema import (
    dead_letters,
    journal,
    order_saga_events,
    order_sagas,
    outbox,
)

__all__ = ["REPLAY_STAGES", "connector_events", "dead_letters_since", "last_event",
           "replay_progress", "reservation_failures", "sales_order_ages",
           "without_sales_order"]

#: where a replay is: in the outbox, published (on its way), delivered, or dead-lettered again
REPLAY_STAGES = ("waiting to publish", "published", "delivered", "failed again")


def _aware_gap(start: datetime, end: datetime) -> float:
    # SQLite hands back naive UTC times, PostgreSQL aware ones: compare them alike
    return max(0.0, (end.replace(tzinfo=None) - start.replace(tzinfo=None)).total_seconds())


def sales_order_ages(conn: Connection, since: datetime, *, limit: int = 10_000) -> list[float]:
    """Seconds from each order's start (the accepted web order) to its ERP sales order (the
    saga's first ``sales_order`` step done), for orders started since ``since`` (newest
    ``limit``)."""
    e = order_saga_events.c
    first = (select(e.order_id, func.min(e.at).label("at"))
             .where(e.step == "sales_order", e.decision == "done", e.at >= since)
             .group_by(e.order_id).subquery())
    rows = conn.execute(select(order_sagas.c.started_at, first.c.at)
                        .join(first, first.c.order_id == order_sagas.c.order_id)
                        .where(order_sagas.c.started_at >= since)
                        .order_by(order_sagas.c.started_at.desc()).limit(limit)).all()
    return [_aware_gap(started, done) for started, done in rows]


def without_sales_order(conn: Connection, since: datetime) -> tuple[int, datetime | None]:
    """Orders started since ``since`` with no ERP sales order yet (not cancelled or finished
    without one): how many, and when the oldest started."""
    e = order_saga_events.c
    done = select(e.order_id).where(e.order_id == order_sagas.c.order_id,
                                    e.step == "sales_order", e.decision == "done").exists()
    count, oldest = conn.execute(select(func.count(), func.min(order_sagas.c.started_at))
                                 .where(order_sagas.c.started_at >= since,
                                        order_sagas.c.state != "final", ~done)).one()
    return int(count or 0), oldest


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
                        # connector events have no route: the (route, event) index serves
                        .where(journal.c.route.is_(None), journal.c.event.in_(list(events)),
                               journal.c.at >= since)
                        .order_by(journal.c.id.desc()).limit(limit)).all()
    return [{"event": event, "at": at, "detail": detail or {}} for event, at, detail in rows]


def last_event(conn: Connection, event: str) -> dict[str, Any] | None:
    """The newest connector event (one about no route) named ``event``: its time and detail,
    or None."""
    row = conn.execute(select(journal.c.at, journal.c.detail)
                       .where(journal.c.route.is_(None), journal.c.event == event)
                       .order_by(journal.c.id.desc()).limit(1)).first()
    return None if row is None else {"at": row.at, "detail": row.detail or {}}


def replay_progress(conn: Connection, fingerprint: str) -> dict[str, Any]:
    """One dead-letter group's replays: its letters per status (``statuses``) and each replay
    sent for them by stage (``stages``, see REPLAY_STAGES: a published replay is failed again
    once a route dead-lettered it, else delivered once a route delivered, filtered or found it
    a duplicate)."""
    d = dead_letters.c
    statuses = {status: int(n) for status, n in conn.execute(
        select(d.status, func.count()).where(d.fingerprint == fingerprint).group_by(d.status))}
    replays = conn.execute(select(outbox.c.envelope_id, outbox.c.published_at)
                           .join(dead_letters, dead_letters.c.id == outbox.c.dead_letter_id)
                           .where(d.fingerprint == fingerprint)).all()
    published = [envelope_id for envelope_id, at in replays if at is not None]
    events: dict[str, set[str]] = {}
    for start in range(0, len(published), 500):
        for envelope_id, event in conn.execute(
                select(journal.c.envelope_id, journal.c.event)
                .where(journal.c.envelope_id.in_(published[start:start + 500]),
                       journal.c.event.in_(("received", "delivered", "duplicate", "filtered",
                                            "dead_lettered")))):
            events.setdefault(envelope_id, set()).add(event)
    stages = dict.fromkeys(REPLAY_STAGES, 0)
    stages["waiting to publish"] = len(replays) - len(published)
    for envelope_id in published:
        seen = events.get(envelope_id, set())
        if "dead_lettered" in seen:
            stages["failed again"] += 1
        elif seen & {"delivered", "duplicate", "filtered"}:
            stages["delivered"] += 1
        else:
            stages["published"] += 1
    return {"statuses": statuses, "stages": stages, "replays": len(replays)}
