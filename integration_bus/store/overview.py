"""Aggregates for the console's overview that the Store's own summaries do not give: the oldest
unsettled message per route and what each source sent to the dead-letter store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, func, select

from integration_bus.store.schema import dead_letters, journal

__all__ = ["SETTLED", "oldest_unsettled", "source_counts"]

#: journal events after which an envelope no longer waits on its route
SETTLED = ("delivered", "duplicate", "filtered", "dead_lettered")


def oldest_unsettled(conn: Connection) -> dict[str, datetime]:
    """Per route, when the oldest envelope still unsettled there was received."""
    later = journal.alias("later")
    settled = select(later.c.id).where(later.c.envelope_id == journal.c.envelope_id,
                                       later.c.route == journal.c.route,
                                       later.c.event.in_(SETTLED)).exists()
    rows = conn.execute(select(journal.c.route, func.min(journal.c.at))
                        .where(journal.c.event == "received", journal.c.route.is_not(None),
                               ~settled)
                        .group_by(journal.c.route)).all()
    return {route: at for route, at in rows if at is not None}


def source_counts(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per source: input it rejected (never became an envelope) and dead letters waiting."""
    c = dead_letters.c
    rows = conn.execute(
        select(c.source,
               func.sum(case((c.reason == "rejected", 1), else_=0)),
               func.sum(case((and_(c.reason != "rejected", c.status == "new"), 1), else_=0)),
               func.max(c.last_failed_at))
        .where(c.source.is_not(None)).group_by(c.source)).all()
    return {source: {"rejected": int(rejected or 0), "dead_letters": int(waiting or 0),
                     "last_failure": last} for source, rejected, waiting, last in rows}
