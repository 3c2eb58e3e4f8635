"""Console users in the store: name, role and an already-hashed password (hashing is the
caller's job: ``integration_bus.web.console.accounts``). Only this module names the table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from integration_bus.store.schema import console_users

__all__ = ["UserRow", "add", "get", "list_all", "remove", "set_password"]


@dataclass(frozen=True)
class UserRow:
    name: str
    role: str
    password_hash: str
    created_at: datetime
    updated_at: datetime


def add(conn: Connection, *, name: str, role: str, password_hash: str, now: datetime) -> bool:
    """Insert a user; False if the name is taken (nothing changed)."""
    if get(conn, name) is not None:
        return False
    conn.execute(insert(console_users).values(name=name, role=role, password_hash=password_hash,
                                              created_at=now, updated_at=now))
    return True


def get(conn: Connection, name: str) -> UserRow | None:
    row = conn.execute(select(console_users).where(console_users.c.name == name)).first()
    return UserRow(**row._mapping) if row is not None else None


def list_all(conn: Connection) -> list[UserRow]:
    rows = conn.execute(select(console_users).order_by(console_users.c.name)).all()
    return [UserRow(**r._mapping) for r in rows]


def remove(conn: Connection, name: str) -> bool:
    return bool(conn.execute(delete(console_users).where(console_users.c.name == name))
                .rowcount)


def set_password(conn: Connection, name: str, password_hash: str, now: datetime) -> None:
    """Store a new hash for ``name`` (a rehash after Argon2 parameters changed)."""
    conn.execute(update(console_users).where(console_users.c.name == name)
                 .values(password_hash=password_hash, updated_at=now))
