"""The cursor table (a source's position, and leases under ``lease:``) and the seen keys a
connector remembers. Every function runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select, text

from integration_bus.liveness import holder_alive
from integration_bus.store.database import dialect_insert
from integration_bus.store.schema import cursors, seen_keys

__all__ = ["forget_seen", "get", "release_lease", "remember", "seen", "set_value", "try_lease"]


def get(conn: Connection, key: str) -> str | None:
    row = conn.execute(select(cursors.c.value).where(cursors.c.key == key)).first()
    return str(row.value) if row else None


def set_value(conn: Connection, key: str, value: str, *, now: datetime) -> None:
    stmt = dialect_insert(conn.dialect.name, cursors).values(key=key, value=value, updated_at=now)
    conn.execute(stmt.on_conflict_do_update(index_elements=["key"],
                                            set_={"value": value, "updated_at": now}))


def try_lease(conn: Connection, name: str, owner: str, lease: timedelta, *,
              now: datetime) -> bool:
    """Take (or renew) the lease ``name`` for ``owner`` unless someone else holds a live one."""
    key = f"lease:{name}"
    if conn.dialect.name == "postgresql":  # serialise check-and-set across processes
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
    held = get(conn, key)
    if held is not None:
        holder, _, until = held.partition("|")
        if holder != owner and datetime.fromisoformat(until) > now and holder_alive(holder):
            return False
    set_value(conn, key, f"{owner}|{(now + lease).isoformat()}", now=now)
    return True


def release_lease(conn: Connection, name: str, owner: str) -> None:
    conn.execute(delete(cursors).where(cursors.c.key == f"lease:{name}",
                                       cursors.c.value.like(f"{owner}|%")))


def seen(conn: Connection, namespace: str, keys: Sequence[str]) -> dict[str, str | None]:
    """Which of ``keys`` were remembered in ``namespace``, with the envelope id they produced."""
    rows = conn.execute(select(seen_keys.c.key, seen_keys.c.envelope_id).where(
        seen_keys.c.namespace == namespace, seen_keys.c.key.in_(list(keys)))).all()
    return {r.key: r.envelope_id for r in rows}


def remember(conn: Connection, namespace: str, items: Sequence[tuple[str, str | None]], *,
             now: datetime) -> None:
    """Remember (key, envelope id) pairs; remembering a key again changes nothing."""
    conn.execute(dialect_insert(conn.dialect.name, seen_keys).on_conflict_do_nothing(), [
        {"namespace": namespace, "key": key, "envelope_id": envelope_id, "at": now}
        for key, envelope_id in items])


def forget_seen(conn: Connection, *, before: datetime) -> int:
    """Forget the seen keys remembered before ``before`` (retention); how many."""
    return int(conn.execute(delete(seen_keys).where(seen_keys.c.at < before)).rowcount or 0)
