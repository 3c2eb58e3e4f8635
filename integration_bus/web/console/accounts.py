"""Console accounts: local users with Argon2id password hashes (argon2-cffi), their roles, and
the login rate limit.

The roles are the CLI's (:mod:`integration_bus.operators`); a console user acts as
``Operator(name, role, via="console")``, so the dead-letter console checks and audits them
exactly as it does the CLI's OS users. Adding and removing users, and every login (failed or
not) and logout, are rows of the same hash-chained audit log (``store/audit.py``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import regex
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from integration_bus.errors import ConfigError, RequestError
from integration_bus.operators import ROLES, Operator
from integration_bus.store import Database, audit, utcnow
from integration_bus.store import users as table

__all__ = ["MIN_PASSWORD", "Accounts", "LoginLimiter"]

MIN_PASSWORD = 12
_NAME = regex.compile(r"^[\p{L}\p{N}._@-]{1,128}$")
# verified against when the user does not exist, so a wrong name costs as long as a wrong
# password (the answer time does not tell which names exist)
_HASHER = PasswordHasher()
_DUMMY = _HASHER.hash("integration-bus: no such user")


class Accounts:
    """The console users of one store. ``actor`` is who manages them (audited)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _audit(self, conn: Any, *, actor: str, role: str, action: str, target: str,
               outcome: str = "ok", count: int = 1, detail: dict[str, Any] | None = None
               ) -> None:
        audit.append(conn, self.db.dialect, at=utcnow(), actor=actor, role=role, action=action,
                     target=target, count=count, outcome=outcome, detail=detail)

    def _require(self, by: Operator, action: str, target: str) -> None:
        """AccessDenied (audited) unless ``by`` may manage users."""
        if not by.may("users"):
            with self.db.begin() as conn:
                self._audit(conn, actor=by.name, role=by.role, action=action, target=target,
                            outcome="denied", count=0)
            by.require("users")

    def add(self, name: str, role: str, password: str, *, by: Operator) -> None:
        """Create a user (``by`` must be an admin). ConfigError for a bad name, role or short
        password, or a taken name (nothing stored)."""
        self._require(by, "users-add", name)
        if not _NAME.match(name):
            raise ConfigError(f"user name {name!r} is not allowed",
                              hint="letters, digits and . _ @ - (at most 128)")
        if role not in ROLES:
            raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise ConfigError(f"the password is too short: at least {MIN_PASSWORD} characters")
        hashed = _HASHER.hash(password)
        with self.db.begin() as conn:
            if not table.add(conn, name=name, role=role, password_hash=hashed, now=utcnow()):
                raise ConfigError(f"user {name!r} exists already",
                                  hint="bus users remove it first to change it")
            self._audit(conn, actor=by.name, role=by.role, action="users-add", target=name,
                        detail={"role": role})

    def remove(self, name: str, *, by: Operator) -> None:
        self._require(by, "users-remove", name)
        with self.db.begin() as conn:
            if not table.remove(conn, name):
                raise RequestError(f"no console user {name!r}", hint="bus users list shows them")
            self._audit(conn, actor=by.name, role=by.role, action="users-remove", target=name)

    def list(self) -> list[table.UserRow]:
        with self.db.begin(read_only=True) as conn:
            return table.list_all(conn)

    def operator(self, name: str) -> Operator | None:
        """The user ``name`` as an Operator with their current role (None: no such user)."""
        with self.db.begin(read_only=True) as conn:
            row = table.get(conn, name)
        return Operator(row.name, row.role, "console") if row is not None else None

    def authenticate(self, name: str, password: str, *, client: str) -> Operator | None:
        """The user if ``password`` is theirs, else None. Both outcomes are audited."""
        with self.db.begin(read_only=True) as conn:
            row = table.get(conn, name) if _NAME.match(name) else None
        try:
            _HASHER.verify(row.password_hash if row is not None else _DUMMY, password)
            ok = row is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        with self.db.begin() as conn:
            if ok and row is not None and _HASHER.check_needs_rehash(row.password_hash):
                table.set_password(conn, row.name, _HASHER.hash(password), utcnow())
            self._audit(conn, actor=name[:128] if row is not None else "-",
                        role=row.role if row is not None else "",
                        action="login", target=f"console from {client}",
                        outcome="ok" if ok else "refused",
                        detail=None if row is not None else {"unknown_user": True})
        return Operator(row.name, row.role, "console") if ok and row is not None else None

    def logout(self, who: Operator, *, client: str) -> None:
        with self.db.begin() as conn:
            self._audit(conn, actor=who.name, role=who.role, action="logout",
                        target=f"console from {client}")


class LoginLimiter:
    """At most ``attempts`` failed logins per (user, client address) in ``window`` seconds;
    after that the login is refused without checking the password until the window moves on.
    In the memory of one console process (restarting it resets the count)."""

    def __init__(self, attempts: int = 5, window: float = 300.0,
                 clock: Any = time.monotonic) -> None:
        self.attempts, self.window, self._clock = attempts, window, clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        now = self._clock()
        failures = self._failures.setdefault(key, deque())
        while failures and now - failures[0] > self.window:
            failures.popleft()
        return failures

    def blocked(self, user: str, client: str) -> bool:
        with self._lock:
            return len(self._recent((user, client))) >= self.attempts

    def failed(self, user: str, client: str) -> None:
        with self._lock:
            self._recent((user, client)).append(self._clock())
            if len(self._failures) > 100_000:  # bounded: forget the quietest first
                for stale in [k for k, v in self._failures.items() if not v][:50_000]:
                    del self._failures[stale]

    def succeeded(self, user: str, client: str) -> None:
        with self._lock:
            self._failures.pop((user, client), None)
