"""The dead-letter audit: append-only rows chained by hashes, so an edit shows.

Each row stores ``prev_hash`` (the hash of the row before it; 64 zeros for the first) and
``hash`` = SHA-256 of ``prev_hash`` and the row's own fields (id, time, actor, role, action,
target, count, outcome, detail). The newest ``id:hash`` is also kept in the cursor table
(``audit:head``) and the next row links to *that*, so deleting the newest rows breaks the
chain too. :func:`verify` recomputes everything: a changed row no longer matches its hash; a
deleted, inserted or moved row breaks the link of the row after it.

What this cannot show: someone with write access to the database who rewrites every hash from
the changed row onwards and the head. Against that, keep the head :func:`verify` prints
somewhere else and compare (``bus dlq audit --verify --head ID:HASH``).

Appends are serialised (an advisory lock on PostgreSQL; SQLite writers already queue on
``BEGIN IMMEDIATE``) so two operators never link to the same row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, insert, select, text, update

from integration_bus.envelope import dumps
from integration_bus.store.database import dialect_insert
from integration_bus.store.schema import cursors, dlq_audit

__all__ = ["GENESIS", "HEAD_KEY", "AuditCheck", "append", "recent", "row_hash", "verify"]

GENESIS = "0" * 64
HEAD_KEY = "audit:head"
_LOCK = 7406129  # pg advisory lock id of audit appends (migrations use 7406128)


def _moment(value: Any) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return str(value.isoformat(timespec="microseconds"))
    return str(value)


def row_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """The hash of one audit row linked to ``prev_hash`` (a stable format: migrations and
    old rows depend on it)."""
    detail = json.dumps(row.get("detail"), sort_keys=True, separators=(",", ":"),
                        ensure_ascii=False, default=str)
    fields = [str(row["id"]), _moment(row["at"]), row["actor"], row.get("role") or "",
              row["action"], row["target"], str(row["count"]), row["outcome"], detail]
    return hashlib.sha256("\x1e".join([prev_hash, *fields]).encode()).hexdigest()


def _head(conn: Connection) -> tuple[int, str] | None:
    value = conn.execute(select(cursors.c.value).where(cursors.c.key == HEAD_KEY)).scalar()
    if not value:
        return None
    ident, _, digest = str(value).partition(":")
    return int(ident), digest


def append(conn: Connection, dialect: str, *, at: datetime, actor: str, role: str, action: str,
           target: str, count: int, outcome: str, detail: dict[str, Any] | None) -> int:
    """Add one row at the end of the chain (inside the caller's transaction); its id."""
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
    head = _head(conn)
    if head is None:
        last = conn.execute(select(dlq_audit.c.hash).order_by(dlq_audit.c.id.desc())
                            .limit(1)).scalar()
        prev = last or GENESIS
    else:
        prev = head[1]
    # the stored detail is what JSON gives back: hash that, not the Python objects
    stored = orjson.loads(dumps(detail)) if detail is not None else None
    values = {"at": at, "actor": actor, "role": role, "action": action, "target": target,
              "count": count, "outcome": outcome, "detail": stored}
    ident = int(conn.execute(insert(dlq_audit).values(**values, prev_hash=prev)
                             .returning(dlq_audit.c.id)).scalar_one())
    digest = row_hash(prev, {**values, "id": ident})
    conn.execute(update(dlq_audit).where(dlq_audit.c.id == ident).values(hash=digest))
    head_value = f"{ident}:{digest}"
    conn.execute(dialect_insert(dialect, cursors)
                 .values(key=HEAD_KEY, value=head_value, updated_at=at)
                 .on_conflict_do_update(index_elements=["key"],
                                        set_={"value": head_value, "updated_at": at}))
    return ident


def recent(conn: Connection, *, limit: int, action: str | None = None) -> list[dict[str, Any]]:
    """The newest rows first."""
    query = select(dlq_audit).order_by(dlq_audit.c.id.desc()).limit(limit)
    if action:
        query = query.where(dlq_audit.c.action == action)
    return [dict(r) for r in conn.execute(query).mappings()]


@dataclass
class AuditCheck:
    """What :func:`verify` found: ``ok`` when nothing is wrong; ``head`` is ``id:hash`` of the
    last row (keep it elsewhere to compare later)."""

    rows: int = 0
    problems: list[str] = field(default_factory=list)
    head: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(conn: Connection, *, expect_head: str | None = None) -> AuditCheck:
    """Walk the whole chain; every row that does not fit is named."""
    check = AuditCheck()
    prev, prev_id = GENESIS, None
    for row in conn.execute(select(dlq_audit).order_by(dlq_audit.c.id)).mappings():
        check.rows += 1
        ident = row["id"]
        if row["prev_hash"] != prev:
            before = f"row {prev_id}" if prev_id is not None else "the start of the log"
            check.problems.append(f"row {ident} does not link to {before}: a row was deleted, "
                                  "inserted or moved there")
        if row["hash"] != row_hash(row["prev_hash"] or "", dict(row)):
            check.problems.append(f"row {ident} does not match its hash: it was changed")
        prev, prev_id = row["hash"] or "", ident
    check.head = f"{prev_id}:{prev}" if prev_id is not None else None
    recorded = _head(conn)
    if recorded is not None and (recorded[0], recorded[1]) != (prev_id, prev):
        check.problems.append(f"the last row is {prev_id or 'none'} but the recorded head is row "
                              f"{recorded[0]}: rows at the end were deleted or added")
    if expect_head is not None and expect_head != check.head:
        check.problems.append(f"the head is {check.head}, not the {expect_head} you kept")
    return check
