"""The audit log's hash chain (SQLite and PostgreSQL) and how operators get their roles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import delete, insert, select, update

from integration_bus.operators import AccessDenied, Operator, role_of
from integration_bus.settings.models import OperatorSettings
from integration_bus.store import Database, Store, audit
from integration_bus.store.database import _MIGRATIONS
from integration_bus.store.schema import dlq_audit


def _append(store: Store, n: int) -> None:
    start = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    for i in range(n):
        with store.db.begin() as conn:
            audit.append(conn, store.db.dialect, at=start + timedelta(seconds=i, microseconds=i),
                         actor=f"ops-{i}", role="operator", action="replay",
                         target=f"ids=D{i} status=new", count=i,
                         outcome="ok", detail={"ids": [f"D{i}"], "force": False, "n": i,
                                               "nested": {"b": 1, "a": [1, "x"]}})


def _verify(store: Store, **kwargs: Any) -> audit.AuditCheck:
    with store.db.begin(read_only=True) as conn:
        return audit.verify(conn, **kwargs)


def _tamper(store: Store, statement: Any) -> None:
    with store.db.begin() as conn:
        conn.execute(statement)


@pytest.fixture
def store(store_url: str) -> Any:
    store = Store.open(store_url)
    _append(store, 5)
    yield store
    store.close()


def test_an_untouched_log_verifies_and_names_its_head(store: Store) -> None:
    check = _verify(store)
    assert check.ok and check.rows == 5, check.problems
    assert check.head is not None and check.head.startswith("5:")
    assert _verify(store, expect_head=check.head).ok
    assert not _verify(store, expect_head="5:" + "0" * 64).ok


def test_an_edited_row_is_found(store: Store) -> None:
    _tamper(store, update(dlq_audit).where(dlq_audit.c.id == 3).values(actor="someone-else"))
    check = _verify(store)
    assert not check.ok and check.problems == ["row 3 does not match its hash: it was changed"]


def test_an_edited_detail_is_found(store: Store) -> None:
    _tamper(store, update(dlq_audit).where(dlq_audit.c.id == 2)
            .values(detail={"ids": ["D1"], "force": True, "n": 1,
                            "nested": {"b": 1, "a": [1, "x"]}}))
    assert _verify(store).problems == ["row 2 does not match its hash: it was changed"]


def test_an_edited_row_with_its_hash_recomputed_breaks_the_next_link(store: Store) -> None:
    with store.db.begin() as conn:
        row = dict(conn.execute(select(dlq_audit).where(dlq_audit.c.id == 2)).mappings().one())
        row["actor"] = "someone-else"
        conn.execute(update(dlq_audit).where(dlq_audit.c.id == 2).values(
            actor="someone-else", hash=audit.row_hash(row["prev_hash"], row)))
    assert _verify(store).problems == [
        "row 3 does not link to row 2: a row was deleted, inserted or moved there"]


def test_deleted_rows_are_found_in_the_middle_and_at_the_end(store: Store) -> None:
    _tamper(store, delete(dlq_audit).where(dlq_audit.c.id == 3))
    assert _verify(store).problems == [
        "row 4 does not link to row 2: a row was deleted, inserted or moved there"]
    _tamper(store, delete(dlq_audit).where(dlq_audit.c.id >= 4))
    problems = _verify(store).problems
    assert problems and "the recorded head is row 5" in problems[-1]
    # and the next append links to the recorded head, so the gap stays visible (SQLite may
    # even give it a deleted row's id)
    _append(store, 1)
    assert any("does not link to row 2" in p for p in _verify(store).problems)


def test_swapped_rows_are_found(store: Store) -> None:
    with store.db.begin() as conn:
        two, four = (dict(conn.execute(select(dlq_audit).where(dlq_audit.c.id == i))
                          .mappings().one()) for i in (2, 4))
        for target, source in ((2, four), (4, two)):
            conn.execute(update(dlq_audit).where(dlq_audit.c.id == target).values(
                **{k: v for k, v in source.items() if k != "id"}))
    problems = _verify(store).problems
    assert any(p.startswith("row 2 ") for p in problems)
    assert any(p.startswith("row 4 ") for p in problems)


def test_rows_written_before_the_chain_existed_are_chained_by_the_migration(
        store_url: str) -> None:
    db = Database(store_url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with db.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
    old = dlq_audit.c
    with db.begin() as conn:
        for i in range(3):
            conn.execute(insert(dlq_audit).values(  # the columns of revision 0005 only
                {old.at: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i),
                 old.actor: "ops", old.action: "discard", old.target: "status=new",
                 old.count: i, old.outcome: "ok", old.detail: {"reason": f"r{i}"}}))
    db.close()
    store = Store.open(store_url)  # migrates to the head
    try:
        check = _verify(store)
        assert check.ok and check.rows == 3, check.problems
        _append(store, 1)
        assert _verify(store).ok
        _tamper(store, update(dlq_audit).where(dlq_audit.c.id == 1).values(count=9))
        assert _verify(store).problems == ["row 1 does not match its hash: it was changed"]
    finally:
        store.close()


def test_roles_come_from_users_then_groups_then_ownership_then_default() -> None:
    settings = OperatorSettings(users={"ann": "viewer"}, groups={"ops": "operator",
                                                                 "dba": "admin"})
    assert role_of(settings, "ann", {"dba"}, owns_config=True) == "viewer"  # users first
    assert role_of(settings, "bob", {"ops", "dba"}, owns_config=False) == "admin"  # highest
    assert role_of(settings, "cid", set(), owns_config=True) == "admin"  # owns bus.yaml
    assert role_of(settings, "dan", set(), owns_config=False) == "viewer"  # the default
    locked = OperatorSettings(default="none", config_owner="operator")
    assert role_of(locked, "eve", set(), owns_config=False) == "none"
    assert role_of(locked, "fay", set(), owns_config=True) == "operator"


def test_what_each_role_may_do() -> None:
    viewer, operator, admin = (Operator("x", r) for r in ("viewer", "operator", "admin"))
    assert viewer.may("read") and viewer.may("search") and not viewer.may("replay")
    assert operator.may("replay") and operator.may("discard") and operator.may("restore")
    assert not operator.may("unmask") and not operator.may("purge")
    assert not operator.may("edit") and not operator.may("force")
    assert all(admin.may(a) for a in ("edit", "unmask", "purge", "force", "replay"))
    with pytest.raises(AccessDenied, match="x \\(viewer\\) may not replay: it needs the "
                                           "operator role"):
        viewer.require("replay")
    with pytest.raises(AccessDenied, match="no role"):
        Operator("y", "none").require("read")
