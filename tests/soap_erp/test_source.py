"""The ERP poll: stock changes since a cursor, page by page, staged with the cursor; celery beat
plans it; a poll killed after publishing but before its cursor loses nothing and repeats no
effect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import delete

from connectors.soap_erp import make_plugin
from connectors.soap_erp.fakeerp import ErpServer, Injection
from integration_bus.connector import PermanentError, TransientError
from integration_bus.runtime import Bus
from integration_bus.scheduler import POLL_TASK, make_scheduler
from integration_bus.store.schema import cursors, outbox
from tests.soap_erp.support import SECRETS, bus_running, open_bus, write_config
from tests.support.outbox import relay_to_dead_letters
from tests.support.probe import Target, probe_plugin, registry_with, wait_for

REPO = Path(__file__).resolve().parents[2]


def _poll_yaml(url: str, *, interval: str = "1h", page: int = 100, extra: str = "") -> str:
    return f"""
  stock:
    connector: soap_erp
    wsdl: config/erp/erp.wsdl
    service: ErpService
    port: StockPort
    address: "{url}"
    timeouts: {{connect: 1s, operation: 5s}}
    poll:
      operation: GetStockChanges
      page_size: {page}
      interval: {interval}{extra}"""


def _add_changes(erp: ErpServer, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        erp.state.seed(f"SRC-{i:05d}", "1042", "0001", i)


def _staged(bus: Bus) -> list[dict[str, Any]]:
    with bus.store.db.begin() as conn:
        rows = conn.execute(outbox.select().order_by(outbox.c.id)).mappings().all()
    return [orjson.loads(r["envelope"]) if isinstance(r["envelope"], str | bytes)
            else r["envelope"] for r in rows]


def test_a_poll_stages_every_change_once_with_its_cursor(tmp_path: Path,
                                                        erp: ErpServer) -> None:
    _add_changes(erp, 247)  # the fixture seeded 3 more: 250 changes
    bus = open_bus(write_config(tmp_path, "", sources=_poll_yaml(erp.url)))
    try:
        assert bus.poll("stock") == 250
        assert erp.state.count("GetStockChanges") == 3  # pages of 100, 100, 50
        staged = _staged(bus)
        keys = [e["idempotency_key"] for e in staged]
        assert keys == [f"stock:GetStockChanges:{n}" for n in range(1, 251)]
        assert {e["type"] for e in staged} == {"erp.stock.changed"}
        assert staged[-1]["payload"]["Material"] == "SRC-00246"
        assert staged[-1]["payload"]["OnHand"] == "246"  # decimals travel as exact text
        assert bus.store.cursor_get("stock:position") == "250"
        assert bus.poll("stock") == 0  # nothing new
        _add_changes(erp, 5, start=1000)
        assert bus.poll("stock") == 5
        assert [e["idempotency_key"] for e in _staged(bus)][-5:] == \
            [f"stock:GetStockChanges:{n}" for n in range(251, 256)]
    finally:
        bus.close()


def test_a_failing_erp_leaves_the_cursor_where_it_was(tmp_path: Path, erp: ErpServer) -> None:
    _add_changes(erp, 147)
    bus = open_bus(write_config(tmp_path, "", sources=_poll_yaml(erp.url)))
    try:
        # the second page fails: the first page is staged with its cursor, nothing beyond
        erp.plan.set(Injection(mode="server_fault", operation="GetStockChanges", every=2,
                               count=1))
        with pytest.raises(TransientError):
            bus.poll("stock")
        assert bus.store.cursor_get("stock:position") == "100" and len(_staged(bus)) == 100
        assert bus.poll("stock") == 50
        assert bus.store.cursor_get("stock:position") == "150"
        # an ERP that answers a position at or before the cursor is refused, not looped on
        erp.plan.clear()
        with erp.state.lock:
            erp.state.changes.append(erp.state.changes[10])
        with pytest.raises(PermanentError, match="does not come after"):
            bus.poll("stock")
        assert bus.store.cursor_get("stock:position") == "150"
    finally:
        bus.close()


def test_celery_beat_plans_the_poll(tmp_path: Path, erp: ErpServer) -> None:
    config_dir = write_config(tmp_path, "", sources=_poll_yaml(erp.url, interval="30s"))
    registry = registry_with(probe_plugin(Target()), make_plugin())
    scheduler = make_scheduler(config_dir, environ=SECRETS, registry=registry)
    try:
        entry = scheduler.app.conf.beat_schedule["poll-stock"]
        assert entry["task"] == POLL_TASK and entry["schedule"].total_seconds() == 30
        assert scheduler.app.tasks[POLL_TASK].apply(args=("stock",)).get() == 3
    finally:
        scheduler.bus().close()


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_a_poll_killed_after_publishing_loses_nothing_and_repeats_no_effect(
        tmp_path: Path, erp: ErpServer, rabbitmq_url: str) -> None:
    _add_changes(erp, 247)  # 250 changes, pages of 50
    routes = """
  changes:
    from: [erp.stock.changed]
    to: [probe]"""
    config_dir = write_config(tmp_path, rabbitmq_url, routes=routes,
                              sources=_poll_yaml(erp.url, interval="50ms", page=50))
    target = Target()
    bus = open_bus(config_dir, target)  # declares the topology
    reached, release = threading.Event(), threading.Event()

    def hold_the_third_page(since: int) -> None:
        if since == 100:
            reached.set()
            release.wait(30)

    erp.state.on_changes = hold_the_third_page
    # Given a poll in its own process that published pages 1 and 2 (confirmed, in the queue)
    log = (tmp_path / "child.log").open("wb")
    child = subprocess.Popen([sys.executable, "-m", "tests.soap_erp.poll_child",
                              str(config_dir)], cwd=REPO, env={**os.environ}, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        assert reached.wait(60), "the poll never asked for the third page"
        wait_for(lambda: getattr(bus.transport.queue_stats("bus.route.changes"), "messages",
                                 0) == 100, message="pages 1 and 2 published by the relay")
        # When the process is killed, and (worst case) its cursor is lost as if it were saved
        # only after publishing — and its poll lease is gone
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        log.close()
        release.set()
    erp.state.on_changes = None
    with bus.store.db.begin() as conn:
        conn.execute(delete(cursors).where(cursors.c.key.in_(["stock:position",
                                                              "lease:poll:stock"])))
    # Then a new run polls everything again, and every change has exactly one effect
    try:
        with bus_running(bus):
            wait_for(lambda: target.count() == 250, timeout=60, message="all 250 delivered")
            wait_for(lambda: bus.store.count_events("duplicate", route="changes") >= 100,
                     message="the re-published changes absorbed by the ledger")
    finally:
        bus.close()
    assert target.duplicates() == {}
    assert sorted(int(e.idempotency_key.rsplit(":", 1)[1]) for e in target.envelopes) == \
        list(range(1, 251))


@pytest.mark.rabbitmq
def test_a_polled_change_no_route_takes_is_dead_lettered_with_its_source(
        tmp_path: Path, erp: ErpServer, rabbitmq_url: str) -> None:
    # Given a bus on RabbitMQ where no route takes stock changes (the fixture seeded three)
    routes = """
  other:
    from: [other.thing]
    to: [probe]"""
    bus = open_bus(write_config(tmp_path, rabbitmq_url, sources=_poll_yaml(erp.url),
                                routes=routes))
    try:
        # When a poll stages them with its cursor and the relay publishes them
        assert bus.poll("stock") == 3
        assert bus.store.cursor_get("stock:position") == "3"
        # Then each is a dead letter that says where it came from: operation, position, page
        letters = relay_to_dead_letters(bus, 3)
        assert {d["error_type"] for d in letters} == {"UnroutableError"}
        assert sorted(d["source_ref"]["position"] for d in letters) == ["1", "2", "3"]
        assert {(d["source_ref"]["operation"], d["source_ref"]["page"]) for d in letters} == {
            ("GetStockChanges", 1)}
    finally:
        bus.close()
