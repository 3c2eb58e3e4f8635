"""Crash markers: which envelopes a worker is executing (table ``crash_markers``).

A worker marks a batch (one row naming its envelopes) before its pipeline and sinks run and
removes the row in the settlement transaction: two cheap statements per batch. A row that
outlives its owner (the process died: SIGKILL, a segfault, the OOM killer) names the messages
that were executing at the crash. Such a message then runs alone under a row of its own
(``s:<route>:<envelope id>``) that carries its crash count and history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Dialect, delete, select, update

from integration_bus.store.database import bind_processor, dialect_insert, placeholder
from integration_bus.store.schema import crash_markers

__all__ = ["CrashMarker", "MarkerKey", "Unmark", "add", "find", "purge", "remove", "single_id",
           "take_over"]

MarkerKey = tuple[str, str]  # (route, envelope id)
#: what settling removes: a whole row (member None), or one member of a row
Unmark = tuple[str, MarkerKey | None]


@dataclass(frozen=True, slots=True)
class CrashMarker:
    """One marked message: its row (``row``), the row's owner, and its crash record."""

    route: str
    envelope_id: str
    row: str
    owner: str
    crashes: int
    started_at: datetime
    history: list[dict[str, Any]] = field(default_factory=list)


def single_id(route: str, envelope_id: str) -> str:
    return f"s:{route}:{envelope_id}"


def add(conn: Any, row: str, keys: Sequence[MarkerKey], owner: str, now: datetime) -> None:
    """Mark ``keys`` executing under row ``row`` (a new crash record). A row of that id already
    there now names these keys instead: a lane's next batch marked in the row of the batch
    it settles (one statement, not a delete and an insert), or the same batch marked again
    by a settlement written again after its commit was not confirmed. Once or twice per batch
    on the hot path: the statement goes to the driver as it is, its values through the
    columns' own bind processors (what SQLAlchemy would store); SQLAlchemy's execution of
    the same upsert took 0.3 ms more of CPU per batch of 100 keys (docs/benchmarks.md)."""
    sql, stamp, as_json = _upsert(conn.dialect)
    conn.exec_driver_sql(sql, (row, owner, stamp(now), as_json(list(dict.fromkeys(keys)))))


@lru_cache(maxsize=4)
def _upsert(dialect: Dialect) -> tuple[str, Callable[[Any], Any], Callable[[Any], Any]]:
    """The marker upsert in the driver's parameter style, and the bind processors of its
    ``started_at`` and ``members`` columns for this dialect."""
    mark = placeholder(dialect)
    return upsert_sql(mark, mark, mark, mark), \
        bind_processor(crash_markers.c.started_at, dialect), \
        bind_processor(crash_markers.c.members, dialect)


def upsert_sql(row: str, owner: str, started_at: str, members: str) -> str:
    """The marker upsert of :func:`add`, its four values written as given (placeholders of
    the caller's driver: ``%s``, ``?``, or libpq's ``$1``.. in ``store/behind.py``)."""
    return (f"INSERT INTO {crash_markers.name} (id, owner, crashes, started_at, members, "
            f"history) VALUES ({row}, {owner}, 0, {started_at}, {members}, NULL) ON CONFLICT "
            "(id) DO UPDATE SET owner = excluded.owner, crashes = 0, started_at = "
            "excluded.started_at, members = excluded.members, history = NULL")


def find(conn: Any, keys: Sequence[MarkerKey], me: str) -> dict[MarkerKey, CrashMarker]:
    """Markers of ``keys`` in rows not owned by ``me`` (few rows: batches in flight elsewhere and
    what crashes left; the table is read whole). Of two rows naming a message, the one with
    more crashes wins."""
    wanted = set(keys)
    found: dict[MarkerKey, CrashMarker] = {}
    for r in conn.execute(select(crash_markers).where(crash_markers.c.owner != me)).all():
        for route, envelope_id in r.members or []:
            key = (route, envelope_id)
            if key in wanted and (key not in found or found[key].crashes < r.crashes):
                found[key] = CrashMarker(route, envelope_id, r.id, r.owner, r.crashes,
                                         r.started_at, list(r.history or []))
    return found


def take_over(conn: Any, dialect: str, marker: CrashMarker, owner: str, crashes: int,
              history: list[dict[str, Any]], now: datetime) -> str:
    """``owner`` runs the message alone now: it gets (or keeps) a row of its own. Returns it."""
    row = single_id(marker.route, marker.envelope_id)
    stmt = dialect_insert(dialect, crash_markers).values(
        id=row, owner=owner, crashes=crashes, started_at=now,
        members=[[marker.route, marker.envelope_id]], history=history)
    conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={
        "owner": owner, "crashes": crashes, "started_at": now, "history": history}))
    if marker.row != row:
        _drop_member(conn, marker.row, (marker.route, marker.envelope_id))
    return row


def remove(conn: Any, unmark: Sequence[Unmark]) -> None:
    """Remove whole rows (member None) and single members. Once per batch on the hot path
    (its own row): the delete of whole rows goes to the driver as it is, as :func:`add` does
    (15 µs of CPU where SQLAlchemy's ``delete().where(in_())`` took 100; docs/benchmarks.md)."""
    whole = list(dict.fromkeys(row for row, member in unmark if member is None))
    if whole:
        mark = placeholder(conn.dialect)
        conn.exec_driver_sql(f"DELETE FROM {crash_markers.name} WHERE id IN "
                             f"({', '.join([mark] * len(whole))})", tuple(whole))
    for row, member in unmark:
        if member is not None:
            _drop_member(conn, row, member)


def _drop_member(conn: Any, row: str, member: MarkerKey) -> None:
    found = conn.execute(select(crash_markers.c.members).where(
        crash_markers.c.id == row)).first()
    if found is None:
        return
    rest = [m for m in found.members or [] if tuple(m) != member]
    if rest:
        conn.execute(update(crash_markers).where(crash_markers.c.id == row).values(
            members=rest))
    else:
        conn.execute(delete(crash_markers).where(crash_markers.c.id == row))


def purge(conn: Any, *, before: datetime) -> int:
    """Delete marker rows started before ``before``; how many. They outlived every redelivery
    of their messages (e.g. the broker's delivery limit took one): nothing will run them again."""
    return int(conn.execute(delete(crash_markers).where(
        crash_markers.c.started_at < before)).rowcount or 0)
