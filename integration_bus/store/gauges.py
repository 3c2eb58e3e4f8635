"""What the watching side reads from the store: dead letters waiting per route and group, and
input sources rejected as a whole (``bus status``, ``/metrics``). Aggregates only: each is one
grouped query, cheap enough for every scrape."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from integration_bus.store.schema import dead_letters, journal

__all__ = ["Rejections", "dead_letter_groups", "source_rejections"]

#: the detail keys that name what was rejected, most telling first
_REF_KEYS = ("file", "delivery_id", "event_id", "answer", "topic")


def dead_letter_groups(conn: Connection) -> list[tuple[str, str, int]]:
    """(route, group, count) of the dead letters waiting (status ``new``). ``route`` is the
    step (``source:NAME``) for input rejected at a source, which has no route; ``group`` is
    the failure fingerprint (``bus dlq groups``)."""
    c = dead_letters.c
    rows = conn.execute(select(c.route, c.step, c.fingerprint, func.count())
                        .where(c.status == "new")
                        .group_by(c.route, c.step, c.fingerprint)).all()
    out: dict[tuple[str, str], int] = {}
    for route, step, group, count in rows:
        key = (route or step or "", group)
        out[key] = out.get(key, 0) + int(count)
    return [(route, group, count) for (route, group), count in sorted(out.items())]


@dataclass
class Rejections:
    """Input one source refused for one reason: how often, when last, the newest names."""

    source: str
    reason: str
    count: int
    last_at: datetime | None
    newest: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "reason": self.reason, "count": self.count,
                "last_at": self.last_at.isoformat() if self.last_at else None,
                "newest": self.newest}


def source_rejections(conn: Connection, *, newest: int = 3,
                      scan: int = 500) -> list[Rejections]:
    """Per (source, reason), the rejections sources recorded (journal events whose detail has
    ``rejection``, written by ``ConnectorContext.rejected`` and ``Bus.reject``), with the
    names of the newest ``newest`` (among the last ``scan`` rejections). A row may stand for
    several (``times``: the webhook receiver writes one row a minute per kind of answer)."""
    detail = journal.c.detail
    reason = detail["rejection"].as_string()
    source = detail["connector"].as_string()
    where = (journal.c.route.is_(None), reason.is_not(None))
    times = func.sum(func.coalesce(detail["times"].as_integer(), 1))
    counted = conn.execute(select(source, reason, times, func.max(journal.c.at))
                           .where(*where).group_by(source, reason)).all()
    found = {(str(s), str(r)): Rejections(str(s), str(r), int(n), at)
             for s, r, n, at in counted}
    recent = conn.execute(select(journal.c.detail).where(*where)
                          .order_by(journal.c.id.desc()).limit(scan)).scalars()
    for row in recent:
        entry = found.get((str(row.get("connector")), str(row.get("rejection"))))
        name = next((str(row[k]) for k in _REF_KEYS if row.get(k)), None)
        if name is not None and row.get("shop") and "file" not in row:
            name = f"{row['shop']} {name}"
        if entry is not None and name is not None and len(entry.newest) < newest \
                and name not in entry.newest:
            entry.newest.append(name)
    return sorted(found.values(), key=lambda r: (r.source, r.reason))
