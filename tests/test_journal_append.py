"""The journal's hot-path insert (``store.journal.append_many``: ``COPY`` on PostgreSQL,
driver-level ``executemany`` on SQLite) stores exactly what SQLAlchemy's own ``insert(journal)``
stores, on SQLite and PostgreSQL, reads back through the store as before, and fails as
SQLAlchemy fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError

from integration_bus.errors import StoreUnavailable
from integration_bus.store import Store
from integration_bus.store import journal as journal_ops
from integration_bus.store.records import JournalEntry
from integration_bus.store.schema import journal

AT = datetime(2026, 12, 5, 10, 11, 12, 345678, tzinfo=UTC)
ENTRIES = [
    JournalEntry("01J0000000000000000000000A", "received", AT, route="orders", attempt=0,
                 mapping_version="orders@3",
                 detail={"type": "order.created", "redelivered": False, "delivery_count": 0,
                         "causation_id": None, "key": "K-1", "ünïcode": "€ 5,00",
                         "nested": {"list": [1, 2.5, "x" * 20_000]}}),
    JournalEntry("01J0000000000000000000000A", "delivered", AT, route="orders", sink="erp",
                 attempt=2, detail={"output_id": "01J1", "key": "K-1"}),
    JournalEntry("01J0000000000000000000000B", "filtered", AT + timedelta(seconds=1),
                 route="orders"),  # no detail
]
COLUMNS = "envelope_id, event, route, sink, attempt, at, mapping_version, detail"


def stored(store: Store, envelope_ids: list[str]) -> list[tuple[object, ...]]:
    """The rows as the database holds them (text, not SQLAlchemy's reading of it)."""
    detail = "detail::text" if store.db.dialect == "postgresql" else "detail"
    at = "at::text" if store.db.dialect == "postgresql" else "at"
    with store.db.begin(read_only=True) as conn:
        rows = conn.exec_driver_sql(
            f"SELECT envelope_id, event, route, sink, attempt, {at}, mapping_version, {detail} "
            f"FROM journal ORDER BY id").all()
    return [tuple(r) for r in rows if r[0] in envelope_ids]


def test_append_many_stores_what_sqlalchemy_stores(store_url: str, tmp_path: Path) -> None:
    check_append_many(store_url, tmp_path)


def test_json_is_stored_right_whatever_the_databases_client_encoding(
        postgres_url: str, tmp_path: Path) -> None:
    # psycopg sends JSON as UTF-8 in any client encoding; a database whose default client
    # encoding is another (WIN1252 here) took those bytes for its own (mojibake: a euro sign
    # became three characters). The store's connections speak UTF-8 whatever the default.
    store = Store.open(postgres_url, root=tmp_path)
    try:
        with store.db.begin() as conn:
            name = conn.exec_driver_sql("SELECT current_database()").scalar_one()
            conn.exec_driver_sql(f"ALTER DATABASE {name} SET client_encoding = 'WIN1252'")
    finally:
        store.close()
    check_append_many(postgres_url, tmp_path)


def check_append_many(store_url: str, tmp_path: Path) -> None:
    store = Store.open(store_url, root=tmp_path)
    try:
        with store.db.begin() as conn:
            conn.execute(insert(journal), [e.row() for e in ENTRIES])
        reference = stored(store, [e.envelope_id for e in ENTRIES])
        with store.db.begin() as conn:
            conn.exec_driver_sql("DELETE FROM journal")
            if store.db.dialect == "postgresql":
                assert conn.exec_driver_sql("SHOW client_encoding").scalar_one() == "UTF8"
            journal_ops.append_many(conn, ENTRIES)
        assert stored(store, [e.envelope_id for e in ENTRIES]) == reference
        assert len(reference) == 3
        rows = store.journal_for("01J0000000000000000000000A")
        assert [r["event"] for r in rows] == ["received", "delivered"]
        assert rows[0]["detail"]["ünïcode"] == "€ 5,00"
        assert len(rows[0]["detail"]["nested"]["list"][2]) < 20_000  # clipped, as before
        assert rows[1]["attempt"] == 2 and rows[1]["sink"] == "erp"
        assert store.count_events("filtered", route="orders") == 1
    finally:
        store.close()


def test_append_many_errors_are_sqlalchemy_errors(postgres_url: str, tmp_path: Path) -> None:
    # The settlement's fallback for data the database refuses catches DBAPIError: PostgreSQL
    # refuses a NUL in text or JSON text and an envelope id over its column's 64 characters.
    store = Store.open(postgres_url, root=tmp_path)
    try:
        for bad in (JournalEntry("x" * 65, "received", AT, route="r"),
                    JournalEntry("ok", "received", AT, route="r", detail={"t": "nul \x00"}),
                    JournalEntry("ok", "received", AT, route="nul \x00")):
            with pytest.raises(DBAPIError), store.db.begin() as conn:
                journal_ops.append_many(conn, [bad])
    finally:
        store.close()


def test_append_many_takes_a_naive_time_as_utc(store_url: str, tmp_path: Path) -> None:
    store = Store.open(store_url, root=tmp_path)
    try:
        naive = JournalEntry("01J0000000000000000000000C", "received", AT.replace(tzinfo=None),
                             route="orders", detail={"n": 1})
        with store.db.begin() as conn:
            journal_ops.append_many(conn, [naive])
        [row] = store.journal_for(naive.envelope_id)
        assert row["at"].replace(tzinfo=row["at"].tzinfo or UTC) == AT
    finally:
        store.close()


def test_append_many_on_a_lost_connection_is_an_outage(postgres_url: str,
                                                       tmp_path: Path) -> None:
    # COPY does not go through SQLAlchemy: a connection that died under it must still count as
    # gone (invalidated, StoreUnavailable: the lane waits for the store), and the next
    # transaction must get a working connection.
    store = Store.open(postgres_url, root=tmp_path)
    try:
        with pytest.raises(StoreUnavailable), store.db.begin() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with store.db.engine.connect() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
                other.commit()
            journal_ops.append_many(conn, ENTRIES)
        with store.db.begin() as conn:
            journal_ops.append_many(conn, ENTRIES[:1])
        assert store.count_events("received", route="orders") == 1
    finally:
        store.close()
