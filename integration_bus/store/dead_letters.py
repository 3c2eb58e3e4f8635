"""The dead-letter table: finding dead letters (a :class:`Selection` of ids, filters or a group,
turned into SQL) and changing their status, payload or replay count.

Every function runs inside the caller's transaction (``conn``), so the dead-letter console can
write its audit row in the same transaction as the change it audits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, and_, cast, delete, func, or_, select
from sqlalchemy import update as sql_update

from integration_bus.errors import RequestError
from integration_bus.store.database import dialect_insert
from integration_bus.store.records import DeadLetter
from integration_bus.store.schema import dead_letters, journal, outbox

__all__ = ["STATUSES", "AmbiguousId", "Connection", "Selection", "add", "count", "fetch", "groups",
           "ids", "listing", "one", "purge", "replays_of", "resolve", "set_edited_payload",
           "set_status", "take_for_replay", "waiting_by_route"]

#: at most this many candidates are named when a prefix is ambiguous
_CANDIDATES = 10

STATUSES = ("new", "replaying", "replayed", "discarded")


@dataclass(frozen=True)
class Selection:
    """Which dead letters an action is about. Empty filters match everything of ``statuses``.

    ``ids`` match a dead letter's id or its envelope id; ``group`` is a fingerprint (or a
    prefix of one, as shown by ``bus dlq groups``); ``text`` is searched in the error message
    and in the envelope (payload included).
    """

    ids: tuple[str, ...] = ()
    route: str | None = None
    error_type: str | None = None
    step: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None
    group: str | None = None
    statuses: tuple[str, ...] = field(default=("new",))

    def describe(self) -> str:
        parts = [f"ids={','.join(self.ids)}"] if self.ids else []
        for name in ("route", "error_type", "step", "source", "since", "until", "text", "group"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        parts.append(f"status={','.join(self.statuses)}")
        return " ".join(parts)

    def where(self) -> ColumnElement[bool]:
        c = dead_letters.c
        clauses: list[ColumnElement[bool]] = []
        if self.ids:
            clauses.append(or_(c.id.in_(self.ids), c.envelope_id.in_(self.ids)))
        for column, value in ((c.route, self.route), (c.error_type, self.error_type),
                              (c.source, self.source)):
            if value is not None:
                clauses.append(column == value)
        if self.step is not None:
            clauses.append(or_(c.step == self.step, c.sink == self.step))
        if self.since is not None:
            clauses.append(c.last_failed_at >= self.since)
        if self.until is not None:
            clauses.append(c.last_failed_at < self.until)
        if self.group is not None:
            clauses.append(c.fingerprint.like(f"{_escape(self.group)}%", escape="\\"))
        if self.text:
            pattern = f"%{_escape(self.text.lower())}%"
            clauses.append(or_(func.lower(c.message).like(pattern, escape="\\"),
                               func.lower(cast(c.envelope, String)).like(pattern, escape="\\")))
        if self.statuses:
            clauses.append(c.status.in_(self.statuses))
        return and_(True, *clauses)


class AmbiguousId(RequestError):
    """An id prefix that more than one dead letter's id (or envelope id) starts with. Its
    ``candidates`` are the matching dead-letter ids (the first few)."""

    def __init__(self, prefix: str, candidates: list[str], more: int) -> None:
        named = ", ".join(candidates) + (f" and {more} more" if more else "")
        super().__init__(f"{prefix!r} is the start of {len(candidates) + more} dead letters' "
                         f"ids: {named}", hint="give more of the id")
        self.prefix = prefix
        self.candidates = candidates


def resolve(conn: Connection, ident: str) -> list[str]:
    """The ids of the dead letters ``ident`` names: those whose id or envelope id it is
    (an envelope dead-lettered on two routes has two), else the one dead letter whose id or
    envelope id starts with it (case-insensitive: ULIDs are). Empty when nothing matches;
    AmbiguousId when a prefix fits more than one dead letter."""
    c = dead_letters.c
    exact = or_(c.id == ident, c.envelope_id == ident)
    found = [str(i) for i in conn.execute(select(c.id).where(exact).order_by(c.id)).scalars()]
    if found or not ident:
        return found
    for candidate in dict.fromkeys((ident, ident.upper())):
        pattern = f"{_escape(candidate)}%"
        matches = or_(c.id.like(pattern, escape="\\"), c.envelope_id.like(pattern, escape="\\"))
        hits = conn.execute(select(c.id).where(matches).order_by(c.id).limit(2)).scalars().all()
        if len(hits) == 1:
            return [str(hits[0])]
        if hits:
            raise _ambiguous(conn, ident, matches)
    return []


def _ambiguous(conn: Connection, ident: str, matches: ColumnElement[bool]) -> AmbiguousId:
    c = dead_letters.c
    total = int(conn.execute(select(func.count()).where(matches)).scalar_one())
    named = [str(i) for i in conn.execute(select(c.id).where(matches).order_by(c.id)
                                          .limit(_CANDIDATES)).scalars()]
    return AmbiguousId(ident, named, total - len(named))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def fetch(conn: Connection, selection: Selection, *, limit: int | None = None,
          offset: int = 0, newest_first: bool = True) -> list[dict[str, Any]]:
    order = dead_letters.c.last_failed_at.desc() if newest_first else dead_letters.c.created_at
    query = select(dead_letters).where(selection.where()).order_by(order, dead_letters.c.id)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    return [dict(r) for r in conn.execute(query).mappings()]


def listing(conn: Connection, *, route: str | None = None, status: str | None = None,
            limit: int = 1000) -> list[dict[str, Any]]:
    """Dead letters oldest first, optionally of one route and/or status."""
    where = []
    if route is not None:
        where.append(dead_letters.c.route == route)
    if status is not None:
        where.append(dead_letters.c.status == status)
    rows = conn.execute(select(dead_letters).where(and_(True, *where))
                        .order_by(dead_letters.c.created_at).limit(limit)).mappings()
    return [dict(r) for r in rows]


def waiting_by_route(conn: Connection) -> dict[str, int]:
    """How many dead letters wait (status ``new``) per route ("" for none)."""
    rows = conn.execute(select(dead_letters.c.route, func.count())
                        .where(dead_letters.c.status == "new")
                        .group_by(dead_letters.c.route)).all()
    return {route or "": int(n) for route, n in rows}


def ids(conn: Connection, selection: Selection) -> list[str]:
    """The ids of the dead letters selected, oldest first."""
    return [str(r) for r in conn.execute(
        select(dead_letters.c.id).where(selection.where())
        .order_by(dead_letters.c.created_at)).scalars()]


def count(conn: Connection, selection: Selection) -> int:
    return int(conn.execute(select(func.count()).where(selection.where())).scalar_one())


def one(conn: Connection, ident: str) -> dict[str, Any] | None:
    """A dead letter by id or envelope id, or a unique prefix of one (any status; see
    :func:`resolve`)."""
    found = resolve(conn, ident)
    if not found:
        return None
    if len(found) > 1:
        raise _ambiguous(conn, ident, dead_letters.c.id.in_(found))
    row = conn.execute(select(dead_letters).where(dead_letters.c.id == found[0])
                       ).mappings().first()
    return dict(row) if row else None


def groups(conn: Connection, selection: Selection) -> list[dict[str, Any]]:
    """Failures grouped by fingerprint (error type + normalised message + route + step), most
    first, each with one of its dead letters as the example.

    Two steps, so that 100,000 dead letters stay fast: counts and times per fingerprint (an
    index-only scan where only the status is filtered), then one example row per group found
    by a correlated ``LIMIT 1`` (error type, route and step are the same in a whole group;
    the example's sink and message are those of one of its letters)."""
    c = dead_letters.c
    counted = (select(c.fingerprint.label("fingerprint"), func.count().label("n"),
                      func.min(c.first_failed_at).label("first_seen"),
                      func.max(c.last_failed_at).label("last_seen"))
               .where(selection.where()).group_by(c.fingerprint).subquery("counted"))
    example = (select(c.id).where(selection.where(), c.fingerprint == counted.c.fingerprint)
               .limit(1).scalar_subquery())
    rows = conn.execute(select(counted, example.label("example_id"))
                        .order_by(counted.c.n.desc(), counted.c.fingerprint)).all()
    examples = {}
    ids = [r.example_id for r in rows if r.example_id is not None]
    for start in range(0, len(ids), 500):
        for row in conn.execute(select(c.id, c.error_type, c.route, c.step, c.sink, c.message)
                                .where(c.id.in_(ids[start:start + 500]))):
            examples[row.id] = row
    out = []
    for r in rows:
        ex = examples.get(r.example_id)
        out.append({"group": r.fingerprint, "error_type": ex.error_type if ex else None,
                    "route": ex.route if ex else None, "step": ex.step if ex else None,
                    "sink": ex.sink if ex else None, "example": ex.message if ex else None,
                    "count": int(r.n), "first_seen": r.first_seen, "last_seen": r.last_seen})
    return out


def replays_of(conn: Connection, dead_letter_id: str) -> list[dict[str, Any]]:
    """The replays of a dead letter, oldest first: the outbox rows that carried it (envelope
    id, routing key, created, published, error) and ``last_event``, the newest journal event
    of each replayed envelope (None before it reached a worker)."""
    replays = [dict(r) for r in conn.execute(
        select(outbox.c.envelope_id, outbox.c.routing_key, outbox.c.created_at,
               outbox.c.published_at, outbox.c.error)
        .where(outbox.c.dead_letter_id == dead_letter_id).order_by(outbox.c.id)).mappings()]
    for replay in replays:
        last = conn.execute(select(journal.c.event)
                            .where(journal.c.envelope_id == replay["envelope_id"])
                            .order_by(journal.c.id.desc()).limit(1)).first()
        replay["last_event"] = None if last is None else str(last.event)
    return replays


def add(conn: Connection, letter: DeadLetter, history: list[dict[str, Any]]) -> None:
    """Keep ``letter`` (with the attempts ``history`` journalled before it); a dead letter
    already kept for the same (envelope, route) stays as it is."""
    stmt = dialect_insert(conn.dialect.name, dead_letters).values(**letter.row(history))
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["envelope_id", "route"]))


def set_edited_payload(conn: Connection, ident: str, payload: Any, *, now: datetime) -> bool:
    """Store ``payload`` as the edit of dead letter ``ident`` if it is still ``new``."""
    c = dead_letters.c
    return conn.execute(sql_update(dead_letters).where(c.id == ident, c.status == "new")
                        .values(edited_payload=payload, updated_at=now)
                        .returning(c.id)).first() is not None


def set_status(conn: Connection, ids: Sequence[str], *, from_statuses: Sequence[str],
               status: str, reason: str, now: datetime) -> list[str]:
    """Move the dead letters of ``ids`` that are still in one of ``from_statuses`` to
    ``status``; the ids moved."""
    if not ids:
        return []
    c = dead_letters.c
    return [str(r.id) for r in conn.execute(
        sql_update(dead_letters).where(c.id.in_(list(ids)), c.status.in_(list(from_statuses)))
        .values(status=status, status_reason=reason, updated_at=now).returning(c.id))]


def take_for_replay(conn: Connection, ids: Sequence[str], *, now: datetime) -> set[str]:
    """Move the dead letters of ``ids`` still ``new`` to ``replaying`` (counting the replay);
    the ids taken. Of two transactions taking the same letter, only one gets it."""
    c = dead_letters.c
    return {str(r.id) for r in conn.execute(
        sql_update(dead_letters).where(c.id.in_(list(ids)), c.status == "new")
        .values(status="replaying", replays=c.replays + 1, updated_at=now).returning(c.id))}


def purge(conn: Connection, statuses: Sequence[str], *, failed_before: datetime) -> int:
    """Delete the dead letters in ``statuses`` that last failed before ``failed_before``."""
    c = dead_letters.c
    result = conn.execute(delete(dead_letters).where(c.status.in_(list(statuses)),
                                                     c.last_failed_at < failed_before))
    return int(result.rowcount or 0)
