"""Finding dead letters: a :class:`Selection` (ids, or filters, or a group) turned into SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, and_, cast, func, or_, select

from integration_bus.errors import RequestError
from integration_bus.store.schema import dead_letters

__all__ = ["STATUSES", "AmbiguousId", "Selection", "count", "fetch", "groups", "one",
           "resolve"]

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
