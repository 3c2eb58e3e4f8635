"""Engine, transactions and migrations; the one place SQL driver errors become bus errors.

SQLite (WAL, ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead of
failing on a lock upgrade) by default; PostgreSQL through psycopg 3 in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, create_engine, event, make_url, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from integration_bus.envelope import dumps
from integration_bus.errors import ConfigError, StoreUnavailable

__all__ = ["Database", "Revision", "bind_processor", "dialect_insert", "placeholder"]

_UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)
_MIGRATIONS = Path(__file__).with_name("migrations")


@dataclass(frozen=True)
class Revision:
    """One schema migration: its id, the one before it and its title."""

    revision: str
    down_revision: str | None
    title: str


class Database:
    """An SQLAlchemy engine plus the bus's conventions. ``close()`` is idempotent."""

    def __init__(self, url: str, *, root: Path | None = None, pool_size: int = 5) -> None:
        self.url = _resolve(url, root)
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(f"unsupported store {self.dialect!r}", field="store.url",
                              hint="use sqlite:///var/bus.db or postgresql+psycopg://...")
        options: dict[str, Any] = {
            "json_serializer": lambda obj: dumps(obj).decode(),
            "json_deserializer": orjson.loads,
        }
        if self.dialect == "postgresql":
            # UTF-8 whatever the database's default client encoding: psycopg sends JSON as
            # UTF-8 in any encoding, which the server would take for that encoding's text
            options.update(pool_pre_ping=True, pool_size=pool_size, pool_recycle=1800,
                           connect_args={"connect_timeout": 5, "client_encoding": "utf8"})
        self.engine: Engine = create_engine(self.url, **options)
        if self.dialect == "sqlite":
            _sqlite_conventions(self.engine)
        self._closed = False

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def begin(self, *, read_only: bool = False) -> Iterator[Connection]:
        """A transaction; commit on success. Unreachable/locked database → StoreUnavailable.

        ``read_only`` (SQLite): a deferred transaction that does not queue behind writers.
        """
        try:
            with self.engine.connect() as conn:
                if read_only:
                    conn = conn.execution_options(bus_read_only=True)
                with conn.begin():
                    yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"store unavailable: {_first_line(exc)}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailable(f"store connection lost: {_first_line(exc)}") from exc
            raise

    def ping(self) -> None:
        """Raise StoreUnavailable unless a trivial query succeeds."""
        with self.begin() as conn:
            conn.execute(text("SELECT 1"))

    def migrate(self) -> None:
        """Bring the schema to the newest revision (serialised across processes)."""
        if self.current_revision() == self.head_revision():
            return
        self.upgrade("head")

    # -- revisions (``bus db``) ------------------------------------------------------------------
    @staticmethod
    def _alembic() -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        return cfg

    @classmethod
    def head_revision(cls) -> str:
        head = ScriptDirectory.from_config(cls._alembic()).get_current_head()
        assert head is not None
        return head

    @classmethod
    def history(cls) -> list[Revision]:
        """Every revision, oldest first."""
        script = ScriptDirectory.from_config(cls._alembic())
        out = [Revision(r.revision, r.down_revision if isinstance(r.down_revision, str | None)
                        else ",".join(r.down_revision), (r.doc or "").strip().splitlines()[0]
                        if r.doc else "")
               for r in script.walk_revisions()]
        return out[::-1]

    def exists(self) -> bool:
        """False for an SQLite file that is not there yet (without creating it)."""
        if self.is_sqlite and self.url.database not in (None, "", ":memory:"):
            return Path(self.url.database).exists()
        return True

    def current_revision(self) -> str | None:
        """The revision the database is at (None: never migrated, or an absent SQLite file)."""
        if not self.exists():
            return None
        with self.begin(read_only=True) as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def require_current(self) -> None:
        """ConfigError (exit 2) naming the command to run unless the schema is at head; never
        changes the database (read-only commands call this instead of migrating)."""
        current, head = self.current_revision(), self.head_revision()
        if current == head:
            return
        where = self.url.render_as_string(hide_password=True)
        if current is None:
            problem = f"the store {where} has no bus tables yet"
        elif current in {r.revision for r in self.history()}:
            problem = f"the store {where} is at revision {current}; this bus needs {head}"
        else:
            raise ConfigError(f"the store {where} is at revision {current}, which this version "
                              f"of the bus does not know (newer than {head}?)", field="store.url",
                              hint="run the bus version that migrated it, or `bus db downgrade "
                                   f"{head}` with that newer version")
        raise ConfigError(problem, field="store.url",
                          hint="run `bus db upgrade` (or start `bus run`/`bus worker` with "
                               "--migrate)")

    def upgrade(self, revision: str = "head") -> None:
        self._run_alembic(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        self._run_alembic(command.downgrade, revision)

    def _run_alembic(self, action: Any, revision: str) -> None:
        cfg = self._alembic()
        if self.is_sqlite and self.url.database not in (None, "", ":memory:"):
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        with self.begin() as conn:
            if self.dialect == "postgresql":  # one migrating process at a time
                conn.execute(text("SELECT pg_advisory_xact_lock(7406128)"))
            cfg.attributes["connection"] = conn
            try:
                action(cfg, revision)
            except CommandError as exc:
                raise ConfigError(f"cannot migrate to {revision!r}: {exc}",
                                  hint="`bus db history` lists the revisions") from exc
            except NotImplementedError as exc:
                raise ConfigError(f"cannot migrate to {revision!r}: {exc}",
                                  hint="restore a backup taken before the upgrade") from exc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.engine.dispose()


def dialect_insert(dialect: str, table: Any) -> Any:
    """An INSERT with ``on_conflict_do_*`` for the store's dialect (both speak it)."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def bind_processor(column: Any, dialect: Any) -> Any:
    """What SQLAlchemy does to a value of ``column`` before the driver gets it, for statements
    that go to the driver as they are (the journal's insert and the crash-marker upsert on the
    hot path): the column type's bind processor, or the value unchanged."""
    return column.type.dialect_impl(dialect).bind_processor(dialect) or _unchanged


def placeholder(dialect: Any) -> str:
    """The driver's placeholder for one value, for statements that go to it as they are:
    ``?`` (sqlite3) or ``%s`` (psycopg)."""
    return "?" if dialect.paramstyle == "qmark" else "%s"


def _unchanged(value: Any) -> Any:
    return value


def _resolve(url: str, root: Path | None) -> URL:
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"not a database URL: {exc}", field="store.url") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not path.is_absolute() and root is not None:
            path = root / path
        parsed = parsed.set(database=str(path))
    return parsed


def _sqlite_conventions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front (no failed lock upgrade mid-transaction);
        # readers do not, so they never wait for a writer (WAL).
        read_only = conn.get_execution_options().get("bus_read_only")
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
