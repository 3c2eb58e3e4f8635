"""The store's schema lifecycle: ``bus db``; read-only commands never migrate."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from integration_bus.cli import cli
from integration_bus.store import Store
from integration_bus.store.database import Database
from tests.conftest import write_config

CONFIG = """
    store:
      url: {url}
    sinks:
      out: {{connector: log}}
    routes:
      orders:
        from: [order.created]
        to: [out]
"""


def _project(tmp_path: Path, url: str) -> Path:
    return write_config(tmp_path, CONFIG.format(url=url))


def _bus(config_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*args, "--config-dir", str(config_dir)], input="{}")
    return result.exit_code, result.output


@pytest.mark.parametrize("command", [["status"], ["trace", "01ABC"], ["dlq", "list"],
                                     ["dlq", "groups"], ["send", "--type", "order.created"]])
def test_read_only_commands_on_an_empty_store_exit_2_naming_the_command(
        tmp_path: Path, command: list[str]) -> None:
    # Given a project whose SQLite store was never created
    config_dir = _project(tmp_path, "sqlite:///var/bus.db")
    # When a command that does not migrate runs
    code, output = _bus(config_dir, *command)
    # Then it exits 2, says what to run, and creates nothing
    assert code == 2, output
    assert "bus db upgrade" in output
    assert not (tmp_path / "var" / "bus.db").exists()


def test_an_older_store_is_named_with_its_revision_and_left_as_it_was(tmp_path: Path) -> None:
    config_dir = _project(tmp_path, "sqlite:///var/bus.db")
    assert _bus(config_dir, "db", "upgrade", "0003")[0] == 0
    code, output = _bus(config_dir, "status")
    assert code == 2
    assert "revision 0003" in output and "bus db upgrade" in output
    db = Database(f"sqlite:///{tmp_path / 'var' / 'bus.db'}")
    try:
        assert db.current_revision() == "0003"
    finally:
        db.close()


def test_db_upgrade_then_current_reports_head_on_postgres(tmp_path: Path,
                                                          postgres_url: str) -> None:
    config_dir = _project(tmp_path, postgres_url)
    code, output = _bus(config_dir, "db", "current")
    assert code == 1 and "empty" in output
    code, output = _bus(config_dir, "db", "upgrade")
    assert code == 0, output
    code, output = _bus(config_dir, "db", "current", "--json")
    report = json.loads(output)
    assert code == 0 and report["at_head"] and report["current"] == Database.head_revision()
    assert "postgres@" in report["store"]
    code, output = _bus(config_dir, "db", "upgrade")
    assert code == 0 and "already at" in output
    code, output = _bus(config_dir, "status", "--json")
    assert code == 0, output


def test_history_marks_the_current_revision(tmp_path: Path) -> None:
    config_dir = _project(tmp_path, "sqlite:///var/bus.db")
    _bus(config_dir, "db", "upgrade", "0002")
    code, output = _bus(config_dir, "db", "history")
    assert code == 0
    lines = output.splitlines()
    assert lines[0].startswith("0001") and lines[-1].startswith(Database.head_revision())
    assert next(line for line in lines if "<- current" in line).startswith("0002")


def test_an_irreversible_downgrade_changes_nothing(tmp_path: Path) -> None:
    config_dir = _project(tmp_path, "sqlite:///var/bus.db")
    _bus(config_dir, "db", "upgrade")
    code, output = _bus(config_dir, "db", "downgrade", "0004")
    assert code == 2 and "not reversible" in output
    assert _bus(config_dir, "db", "current")[0] == 0


def test_a_reversible_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    config_dir = _project(tmp_path, "sqlite:///var/bus.db")
    _bus(config_dir, "db", "upgrade", "0004")
    code, output = _bus(config_dir, "db", "downgrade", "0002")
    assert code == 0, output
    assert "to 0002" in output
    assert _bus(config_dir, "db", "upgrade")[0] == 0


def test_worker_on_rabbitmq_refuses_an_unmigrated_store_unless_told(
        tmp_path: Path, postgres_url: str, rabbitmq_url: str) -> None:
    config_dir = write_config(tmp_path, CONFIG.format(url=postgres_url).replace(
        "store:", f"broker:\n      url: {rabbitmq_url}\n    store:", 1))
    code, output = _bus(config_dir, "worker")
    assert code == 2 and "bus db upgrade" in output


def test_migrating_a_postgres_store_with_data_from_the_first_revision_to_head(
        postgres_url: str) -> None:
    # Given a store at the first revision holding rows of every table it had then
    db = Database(postgres_url)
    db.upgrade("0001")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    envelope = {"id": "E1", "type": "order.created", "source": "shop", "payload": {"n": 1},
                "created_at": now.isoformat(), "attempt": 0, "headers": {},
                "idempotency_key": "K1"}
    with db.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO journal (envelope_id, event, route, attempt, at, detail) "
            "VALUES ('E1', 'received', 'orders', 0, :at, '{}')"), {"at": now})
        conn.execute(sa.text(
            "INSERT INTO idempotency_ledger VALUES ('out', 'K1', 'done', 'E1#0', 'E1', :at, :at)"),
            {"at": now})
        conn.execute(sa.text(
            "INSERT INTO dead_letters (id, envelope_id, route, reason, error_type, message, "
            "fingerprint, attempts, envelope, status, first_failed_at, last_failed_at, "
            "created_at) VALUES ('D1', 'E1', 'orders', 'error', 'MappingError', 'bad', 'fp', "
            "'[]', :env, 'new', :at, :at, :at)"), {"at": now, "env": json.dumps(envelope)})
        conn.execute(sa.text(
            "INSERT INTO outbox (envelope_id, exchange, routing_key, envelope, reason, "
            "created_at) VALUES ('E2', 'bus.ingress', 'order.created', :env, 'send', :at)"),
            {"at": now, "env": json.dumps({**envelope, "id": "E2"})})
        conn.execute(sa.text("INSERT INTO cursors VALUES ('shop:orders', '42', :at)"),
                     {"at": now})
    db.close()
    # When it is migrated to head
    store = Store.open(postgres_url)
    try:
        # Then every row is still there and readable through the store
        assert store.db.current_revision() == Database.head_revision()
        assert [e["event"] for e in store.journal_for("E1")] == ["received"]
        assert store.ledger_state("out", "K1") == "done"
        (letter,) = store.dead_letters()
        assert letter["id"] == "D1" and letter["envelope"]["payload"] == {"n": 1}
        assert store.outbox_waiting() == 1
        assert store.cursor_get("shop:orders") == "42"
    finally:
        store.close()


def test_the_journal_route_event_index_leaves_out_the_common_events_on_postgres(
        postgres_url: str) -> None:
    # Revision 0014: received and delivered (two rows per message) are not in the index on
    # PostgreSQL, the rare events are and the planner uses it for them; a downgrade puts the
    # whole index back.
    db = Database(postgres_url)

    def index() -> str:
        with db.begin() as conn:
            return str(conn.execute(sa.text(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_journal_route_event'"
            )).scalar_one())

    try:
        db.upgrade("head")
        assert "WHERE" in index() and "received" in index()
        with db.begin() as conn:
            conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(r[0] for r in conn.execute(sa.text(
                "EXPLAIN SELECT count(*) FROM journal WHERE event = 'retried' "
                "AND route = 'orders'")))
        assert "ix_journal_route_event" in plan
        db.downgrade("0013")
        assert "WHERE" not in index()
    finally:
        db.close()
