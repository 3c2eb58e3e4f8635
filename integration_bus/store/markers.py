"""Crash markers: which envelopes a worker is executing (table ``crash_markers``).

A worker marks a batch before its pipeline and sinks run and removes the marks in the
settlement transaction. A mark that outlives its owner (the process died, e.g. SIGKILL, a
segfault or the OOM killer) names the messages that were executing at the crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, tuple_, update

from integration_bus.store.database import dialect_insert
from integration_bus.store.schema import crash_markers

__all__ = ["CrashMarker", "add", "find", "remove", "take_over"]

MarkerKey = tuple[str, str]  # (route, envelope id)


@dataclass(frozen=True, slots=True)
class CrashMarker:
    route: str
    envelope_id: str
    owner: str
    crashes: int
    started_at: datetime
    history: list[dict[str, Any]] = field(default_factory=list)


def add(conn: Any, dialect: str, keys: Sequence[MarkerKey], owner: str, now: datetime) -> None:
    unique = list(dict.fromkeys(keys))
    if not unique:
        return
    conn.execute(dialect_insert(dialect, crash_markers).on_conflict_do_nothing(), [
        {"route": route, "envelope_id": envelope_id, "owner": owner, "crashes": 0,
         "started_at": now, "history": []} for route, envelope_id in unique])


def find(conn: Any, keys: Sequence[MarkerKey]) -> dict[MarkerKey, CrashMarker]:
    unique = list(dict.fromkeys(keys))
    if not unique:
        return {}
    c = crash_markers.c
    rows = conn.execute(select(crash_markers).where(
        tuple_(c.route, c.envelope_id).in_(unique))).all()
    return {(r.route, r.envelope_id): CrashMarker(r.route, r.envelope_id, r.owner, r.crashes,
                                                  r.started_at, list(r.history or []))
            for r in rows}


def take_over(conn: Any, marker: CrashMarker, owner: str, crashes: int,
              history: list[dict[str, Any]], now: datetime) -> None:
    c = crash_markers.c
    conn.execute(update(crash_markers).where(
        c.route == marker.route, c.envelope_id == marker.envelope_id).values(
        owner=owner, crashes=crashes, history=history, started_at=now))


def remove(conn: Any, keys: Sequence[MarkerKey]) -> None:
    unique = list(dict.fromkeys(keys))
    if not unique:
        return
    c = crash_markers.c
    for start in range(0, len(unique), 500):
        conn.execute(delete(crash_markers).where(
            tuple_(c.route, c.envelope_id).in_(unique[start:start + 500])))
