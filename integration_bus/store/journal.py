"""The journal: one row per event in an envelope's life (received, delivered, duplicate,
retried, dead_lettered, published, replayed, filtered, rejected, ...), appended and never changed.

Every function runs inside the caller's transaction (``conn``). :func:`append_many` is the only
write: the settlement of every worker batch goes through it, so it stays one statement per batch
(it is on the hot path of every message): ``COPY`` on PostgreSQL, ``executemany`` on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Dialect, delete, func, select
from sqlalchemy.exc import DBAPIError

from integration_bus.envelope import dumps
from integration_bus.store.database import bind_processor, placeholder
from integration_bus.store.records import JournalEntry
from integration_bus.store.schema import journal

__all__ = ["append_many", "attempt_history", "count_events", "entries", "purge",
           "route_summary", "waiting_retry"]


_COLUMNS = ("envelope_id", "event", "route", "sink", "attempt", "at", "mapping_version", "detail")


def append_many(conn: Connection, rows: Sequence[JournalEntry]) -> None:
    """Append ``rows`` in one statement; nothing when empty.

    On the hot path of every message (two rows each). On PostgreSQL the rows go in through
    one binary ``COPY … FROM STDIN`` (:func:`_copy`): per batch of 200 rows 1.9 ms, where a
    pipelined ``executemany`` of the same INSERT took 3.2 (docs/benchmarks.md, issue 16).
    Elsewhere the INSERT goes to the driver as it is, with what SQLAlchemy would store: the
    time through the column's own bind processor (a batch's shared timestamp converted once),
    the detail as the bus's JSON text (``JournalEntry.detail_json``, the text the column's
    JSON type writes); SQLAlchemy's compiled ``insert()``
    spent about as long building parameters as SQLite spent writing them. Errors are
    SQLAlchemy's either way (``DBAPIError``)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _copy(conn, rows)
        return
    sql, stamp = _writer(conn.dialect)
    stamps: dict[datetime, Any] = {}
    params = []
    for e in rows:
        at = stamps.get(e.at)
        if at is None:
            at = stamps[e.at] = stamp(e.at)
        params.append((e.envelope_id, e.event, e.route, e.sink, e.attempt, at,
                       e.mapping_version, e.detail_json()))
    conn.exec_driver_sql(sql, params)


_COPY = f"COPY {journal.name} ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
#: the columns' types as COPY's binary format carries them (schema.journal)
_COPY_TYPES = ("varchar", "varchar", "varchar", "varchar", "int4", "timestamptz", "varchar",
               "jsonb")


def _copy(conn: Connection, rows: Sequence[JournalEntry]) -> None:
    """:func:`append_many` on PostgreSQL: a binary ``COPY`` on the transaction's own psycopg
    connection, the detail serialised by the bus's own JSON encoder (what SQLAlchemy's JSONB
    type would store; binary saved 0.5 ms more per batch of 200 rows than text, whose
    parsing is the server's). A driver error is raised as SQLAlchemy would raise it
    (``DBAPIError``, the connection invalidated when it is gone), since the statement does
    not go through SQLAlchemy."""
    from psycopg.types.json import Jsonb, set_json_dumps  # the store is PostgreSQL: installed

    dialect = conn.dialect
    driver = conn.connection.driver_connection
    stamps: dict[datetime, datetime] = {}
    try:
        with driver.cursor() as cursor:  # type: ignore[union-attr]
            set_json_dumps(_json_text, context=cursor)
            with cursor.copy(_COPY) as copy:
                copy.set_types(_COPY_TYPES)
                for e in rows:
                    at = stamps.get(e.at)
                    if at is None:  # the bus's times are UTC; a naive one is taken as such
                        at = stamps[e.at] = e.at if e.at.tzinfo else e.at.replace(tzinfo=UTC)
                    copy.write_row((e.envelope_id, e.event, e.route, e.sink, e.attempt, at,
                                    e.mapping_version, Jsonb(e.clipped_detail())))
    except dialect.loaded_dbapi.Error as exc:
        gone = dialect.is_disconnect(exc, driver, None)
        if gone:
            conn.invalidate(exc)
        raise DBAPIError.instance(_COPY, None, exc, dialect.loaded_dbapi.Error,
                                  connection_invalidated=gone, dialect=dialect) from exc


def _json_text(value: Any) -> str:
    return dumps(value).decode()


@lru_cache(maxsize=8)
def _writer(dialect: Dialect) -> tuple[str, Callable[[Any], Any]]:
    """The journal's INSERT in the driver's parameter style, and the bind processor of its
    ``at`` column for this dialect (``detail`` is the bus's JSON text,
    ``JournalEntry.detail_json``: what the column's JSON type stores, without its calls)."""
    mark = placeholder(dialect)
    sql = (f"INSERT INTO {journal.name} ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join([mark] * len(_COLUMNS))})")
    return sql, bind_processor(journal.c.at, dialect)


def entries(conn: Connection, envelope_id: str) -> list[dict[str, Any]]:
    """An envelope's journal rows, oldest first."""
    rows = conn.execute(select(journal).where(journal.c.envelope_id == envelope_id)
                        .order_by(journal.c.id)).mappings().all()
    return [dict(r) for r in rows]


def attempt_history(conn: Connection, envelope_id: str,
                    route: str | None) -> list[dict[str, Any]]:
    """The retries journalled for an envelope on ``route``, oldest first: what a dead letter
    keeps as its attempts (attempt number, ISO time, sink, and the retry's detail)."""
    rows = conn.execute(
        select(journal.c.attempt, journal.c.at, journal.c.detail, journal.c.sink)
        .where(journal.c.envelope_id == envelope_id, journal.c.event == "retried",
               journal.c.route == route)
        .order_by(journal.c.id)).all()
    return [{"attempt": r.attempt, "at": _iso(r.at), "sink": r.sink, **(r.detail or {})}
            for r in rows]


def count_events(conn: Connection, event: str, route: str | None = None) -> int:
    """Rows of ``event`` (on ``route`` only, when given)."""
    where = [journal.c.event == event]
    if route is not None:
        where.append(journal.c.route == route)
    return int(conn.execute(select(func.count()).where(*where)).scalar_one())


def route_summary(conn: Connection) -> dict[str, dict[str, int]]:
    """Per route, distinct envelopes by fate: received, delivered, filtered, dead_lettered,
    retried (ever), duplicate (sink deliveries suppressed by the ledger). An envelope that was
    dead-lettered does not count as delivered."""
    events = ("received", "filtered", "dead_lettered", "retried", "duplicate")
    rows = conn.execute(
        select(journal.c.route, journal.c.event, func.count(journal.c.envelope_id.distinct()))
        .where(journal.c.route.is_not(None), journal.c.event.in_(events))
        .group_by(journal.c.route, journal.c.event)).all()
    dead = select(journal.c.envelope_id).where(journal.c.event == "dead_lettered")
    delivered = conn.execute(
        select(journal.c.route, func.count(journal.c.envelope_id.distinct()))
        .where(journal.c.event.in_(("delivered", "duplicate")),
               journal.c.envelope_id.not_in(dead))
        .group_by(journal.c.route)).all()
    out: dict[str, dict[str, int]] = {}
    for route, event, count in rows:
        out.setdefault(route, {})[event] = int(count)
    for route, count in delivered:
        out.setdefault(route, {})["delivered"] = int(count)
    return out


def waiting_retry(conn: Connection) -> dict[str, int]:
    """Per route, envelopes whose latest journal event is 'retried' (waiting in a tier)."""
    later = journal.alias("later")
    newer = select(later.c.id).where(later.c.envelope_id == journal.c.envelope_id,
                                     later.c.id > journal.c.id).exists()
    rows = conn.execute(select(journal.c.route, func.count())
                        .where(journal.c.event == "retried", ~newer)
                        .group_by(journal.c.route)).all()
    return {route: int(n) for route, n in rows}


def purge(conn: Connection, *, before: datetime) -> int:
    """Delete the rows written before ``before`` (retention); how many."""
    return int(conn.execute(delete(journal).where(journal.c.at < before)).rowcount or 0)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()
