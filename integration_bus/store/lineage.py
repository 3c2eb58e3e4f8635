"""Lineage in the journal: which envelope caused which, and every envelope of a business key.

A ``received`` row's detail holds the envelope's ``type``, ``causation_id``, ``correlation_id``
and idempotency ``key``; a ``delivered``/``duplicate`` row's detail holds the ``output_id`` the
route made of it for that sink. A ``bus`` sink (or the availability gate) publishes an envelope
derived from that output, so the next envelope's causation id is the output id (or the input's
own id, when the route passes it through unchanged). Rows journaled before the causation was
recorded end a walk there.

These queries read JSON fields of ``detail`` without an index: they scan the journal, which is
fine for an operator's ``bus trace``; keep the journal's retention in mind on large stores.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection, select

from integration_bus.store.schema import journal

__all__ = ["ancestors", "descendants", "envelopes_of_key", "summaries"]

MAX_ENVELOPES = 5000  # a walk stops there (a flow fanning out to more is cut, and says so)
_DELIVERED = ("delivered", "duplicate")


def _field(name: str) -> Any:
    return journal.c.detail[name].as_string()


def ancestors(conn: Connection, envelope_id: str) -> list[str]:
    """The envelopes that led to ``envelope_id``, oldest first."""
    found: list[str] = []
    current = envelope_id
    while len(found) < MAX_ENVELOPES:
        cause = conn.execute(select(_field("causation_id"))
                             .where(journal.c.envelope_id == current,
                                    journal.c.event == "received").limit(1)).scalar()
        if not cause:
            break
        parent = conn.execute(select(journal.c.envelope_id)
                              .where(journal.c.event.in_(_DELIVERED),
                                     _field("output_id") == cause).limit(1)).scalar()
        if parent is None or parent == current:
            known = conn.execute(select(journal.c.envelope_id)
                                 .where(journal.c.envelope_id == cause).limit(1)).scalar()
            parent = known
        if parent is None or parent in (current, envelope_id) or parent in found:
            break
        found.insert(0, parent)
        current = parent
    return found


def descendants(conn: Connection, envelope_id: str) -> list[str]:
    """The envelopes ``envelope_id`` caused, directly or not, in the order they were first
    journaled (breadth first)."""
    seen = {envelope_id}
    found: list[str] = []
    frontier = [envelope_id]
    while frontier and len(found) < MAX_ENVELOPES:
        outputs = conn.execute(select(_field("output_id"))
                               .where(journal.c.envelope_id.in_(frontier),
                                      journal.c.event.in_(_DELIVERED))
                               .distinct()).scalars().all()
        causes = {*frontier, *(o for o in outputs if o)}
        children = conn.execute(select(journal.c.envelope_id)
                                .where(journal.c.event == "received",
                                       _field("causation_id").in_(causes))
                                .order_by(journal.c.id)).scalars().all()
        frontier = []
        for child in children:
            if child not in seen:
                seen.add(child)
                found.append(child)
                frontier.append(child)
    return found[:MAX_ENVELOPES]


def envelopes_of_key(conn: Connection, key: str) -> list[str]:
    """Every envelope of one business key, in the order they were created (their ids are ULIDs;
    the journal's order is not it: the route lanes settle concurrently): those whose
    idempotency key holds ``key`` as a whole part (``ORDER-1`` matches
    ``shopify-ORDER-1>order.created`` but not ``ORDER-10``), and every envelope sharing a
    correlation id with one of them (the whole flow they belong to)."""
    escaped = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    whole = re.compile(rf"(?<![0-9A-Za-z]){re.escape(key)}(?![0-9A-Za-z])")
    rows = conn.execute(select(journal.c.envelope_id, journal.c.event, _field("key"),
                               _field("correlation_id"))
                        .where(journal.c.event.in_(("received", *_DELIVERED)),
                               _field("key").like(f"%{escaped}%", escape="\\"))).all()
    matching = {row[0] for row in rows if row[2] and whole.search(row[2])}
    if not matching:
        return []
    correlations = conn.execute(select(_field("correlation_id"))
                                .where(journal.c.event == "received",
                                       journal.c.envelope_id.in_(matching))
                                .distinct()).scalars().all()
    wanted = [c for c in correlations if c]
    related = conn.execute(select(journal.c.envelope_id)
                           .where(journal.c.event == "received",
                                  _field("correlation_id").in_(wanted))
                           .order_by(journal.c.id)).scalars().all() if wanted else []
    return sorted(set(related) | matching)[:MAX_ENVELOPES]


def summaries(conn: Connection, envelope_ids: list[str]) -> list[dict[str, Any]]:
    """Per envelope (in the order given): type, routes, and its events in journal order."""
    rows = conn.execute(select(journal.c.envelope_id, journal.c.event, journal.c.route,
                               journal.c.sink, journal.c.at, _field("type"))
                        .where(journal.c.envelope_id.in_(envelope_ids))
                        .order_by(journal.c.id)).all() if envelope_ids else []
    by_id: dict[str, dict[str, Any]] = {
        e: {"envelope_id": e, "type": None, "routes": [], "events": [], "first_at": None}
        for e in envelope_ids}
    for envelope_id, event, route, sink, at, type_ in rows:
        entry = by_id[envelope_id]
        entry["type"] = entry["type"] or type_
        if route and route not in entry["routes"]:
            entry["routes"].append(route)
        entry["first_at"] = entry["first_at"] or at
        entry["events"].append({"event": event, "route": route, "sink": sink, "at": at})
    return [by_id[e] for e in envelope_ids]
