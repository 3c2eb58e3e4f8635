"""The console's business pages against a real store: the overview's business tiles, the files
page (a real pos_file source on RabbitMQ), the stock page (the fake ERP and fake shop of
tests/test_reconcile.py) with its reconcile button, and the trace page by envelope or business
key — roles on the server, hostile data escaped."""

from __future__ import annotations

import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from integration_bus.envelope import Envelope
from integration_bus.operators import Operator
from integration_bus.retail.orders.book import Entry, SagaBook
from integration_bus.retail.orders.saga import Line, Saga
from integration_bus.retail.projection import StockLevel
from integration_bus.runtime import Bus
from integration_bus.web.console.accounts import Accounts
from integration_bus.web.console.app import make_app
from integration_bus.web.console.business import percentile
from tests.console_support import HOSTILE, PASSWORD, build, csrf, login
from tests.dlq_project import order
from tests.support.probe import running, wait_for

SECRET = "p" * 48
# a hostile value without "/" (a file name cannot hold one)
HOSTILE_NAME = '<script>alert(1)<script>"><img src=x onerror=alert(2)>'
# hostile SKUs the ERP takes (its material numbers are at most 40 characters)
HOSTILE_SKUS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(2)>')


def escaped(text: str) -> bool:
    return "<script>alert" not in text and "<img src=x" not in text


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("console-pages")
    build(root)
    return root


@pytest.fixture
def bus(built: Path, tmp_path: Path) -> Iterator[Bus]:
    root = tmp_path / "project"
    shutil.copytree(built, root)
    with Bus.from_config_dir(root / "config", environ={}) as opened:
        yield opened


@pytest.fixture
def client(bus: Bus) -> Iterator[TestClient]:
    with TestClient(make_app(bus, secret=SECRET)) as test_client:
        yield test_client


def add_users(bus: Bus) -> None:
    accounts = Accounts(bus.store.db)
    for role in ("viewer", "operator", "admin"):
        accounts.add(role, role, PASSWORD, by=Operator.system("test-setup"))


def sagas(bus: Bus, *, sales_orders: int, short: int) -> None:
    """Orders through the saga store as the order process manager records them."""
    book = SagaBook(bus.store)
    for n in range(sales_orders):
        saga = Saga(f"W-9{n:04d}", "web", time.time(),
                    [Line(1, "TEE-BLK-M", "1", f"W-9{n:04d}>1")])
        record = book.start(saga)
        entries = [Entry("reserve", "short" if n < short else "reserved", "at WH-01"),
                   Entry("sales_order", "done", "as ordered")]
        book.save_steps(record, saga, entries)
    book.start(Saga("W-80000", "web", time.time(), [Line(1, "MUG-WHT-01", "1", "W-80000>1")]))


# -- overview tiles ----------------------------------------------------------------------------
def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95)) == (50.0, 95.0)
    assert percentile([5.0, 1.0, 3.0, 2.0], 0.5) == 2.0


def test_the_overview_shows_the_business_tiles(client: TestClient, bus: Bus) -> None:
    # Given three orders with their ERP sales order (one reservation refused), a late store
    # file, and the four dead letters of the project (all from the last hour)
    sagas(bus, sales_orders=3, short=1)
    bus.record("tills", "pos_file.file_late", {"store": "0042", "pattern": "S*",
                                               "day": "2026-12-05"})
    login(client, "viewer")
    page = client.get("/").text

    def tile(name: str) -> str:
        found = re.search(rf'id="tile-{name}">(.*?)</section>', page, re.S)
        assert found, page
        return found.group(1)

    assert "p50" in tile("orders") and "p95" in tile("orders")
    assert "3 order(s)" in tile("orders")
    assert "1 still without a sales order (oldest " in tile("orders")
    assert '<span class="big">1</span>' in tile("reservations")
    assert "no reconcile yet" in tile("stock")
    assert re.search(r'<span class="big">1</span> late · <span class="big">0</span> missing',
                     tile("files"))
    assert "+4</span> last hour" in tile("dead-letters")
    assert "4 in 24 h" in tile("dead-letters")


# -- trace ---------------------------------------------------------------------------------------
def test_trace_by_business_key_lists_the_flow_and_by_id_shows_lineage(
        client: TestClient, bus: Bus) -> None:
    keyed = Envelope.create("shop.order", {**order(7, "qty").payload},
                            source="shop", idempotency_key="shopify-W-00007>order.created")
    publisher = bus.publisher()
    assert publisher.publish_many([keyed]) == [None]
    publisher.close()
    with running(lambda stop: bus.run(stop, sources=[])):
        wait_for(lambda: len(bus.store.dead_letters()) == 5, message="5 dead letters")
    login(client, "viewer")
    page = client.get("/trace", params={"key": "W-00007"})
    assert page.status_code == 200
    assert keyed.id in page.text and "dead_lettered" in page.text and "orders" in page.text
    part = client.get("/trace", params={"key": "W-0000"}).text  # a part of a key is not it
    assert keyed.id not in part and "<td colspan=\"5\">none</td>" in part
    by_id = client.get("/trace", params={"id": keyed.id}).text
    assert "<h2>Flow</h2>" in by_id and "dead_lettered" in by_id
    hostile = client.get("/trace", params={"key": HOSTILE})
    assert hostile.status_code == 200 and escaped(hostile.text)
    assert "&lt;script&gt;" in hostile.text


# -- stock -----------------------------------------------------------------------------------
@pytest.fixture
def world(tmp_path: Path) -> Iterator[object]:
    from tests.test_reconcile import make_world

    yield from make_world(tmp_path, "sqlite:///var/bus.db",
                          extra="reconcile: {erp: erp_stock, shop: shop_stock}\n")


def test_an_operator_runs_reconcile_and_the_differences_are_highlighted(
        world: object, tmp_path: Path) -> None:
    from tests.test_reconcile import World, reconcile

    assert isinstance(world, World)
    # Given the ERP issued 3 mugs at the store without the bus hearing of it, and the
    # projection holds SKUs with hostile names no other system knows
    world.erp.post_movement("GI-1", ("MUG-WHT-01", "1042", "0001"), "201", Decimal(3))
    with world.bus() as bus:
        bus.stock.apply([StockLevel(sku, "WH-01", Decimal(1), version=1)
                         for sku in HOSTILE_SKUS])
        add_users(bus)
        with TestClient(make_app(bus, secret=SECRET)) as client:
            login(client, "viewer")
            page = client.get("/stock")
            assert "No reconcile has run yet" in page.text
            assert "Run reconcile now" not in page.text
            # When a viewer forges the POST: refused, audited, nothing run
            forged = client.post("/stock/reconcile", data={"csrf": csrf(client, "/stock")})
            assert forged.status_code == 403
            assert "No reconcile has run yet" in client.get("/stock").text
            client.post("/logout", data={"csrf": csrf(client, "/stock")})
            # And a POST without the session's CSRF token is refused too
            login(client, "operator")
            assert client.post("/stock/reconcile", data={}).status_code == 403
            # When the operator presses the button
            answer = client.post("/stock/reconcile", data={"csrf": csrf(client, "/stock")})
            assert answer.status_code == 200, answer.text
            assert "reconciled: 3 of 7 pairs differ" in answer.text, answer.text
            # Then the mismatched pairs are listed, the differing values highlighted
            table = re.search(r'<table id="mismatches">(.*?)</table>', answer.text, re.S)
            assert table, answer.text
            mug = re.search(r"MUG-WHT-01</a></td><td>STORE-042</td>(.*?)</tr>", table.group(1),
                            re.S)
            assert mug, table.group(1)
            cells = re.findall(r'<td class="n( differs)?">([^<]*)</td>', mug.group(1))
            assert cells == [("", "0"), ("", "0"), (" differs", "3"), (" differs", "3"),
                             ("", "\N{EN DASH}")]
            assert escaped(answer.text) and "&lt;script&gt;" in answer.text
            # And the availability lookup reads the projection
            lookup = client.get("/stock", params={"sku": "TEE-BLK-M"})
            rows = re.search(r'<table id="availability">(.*?)</table>', lookup.text, re.S)
            assert rows and "STORE-042" in rows.group(1) and "WH-01" in rows.group(1)
            assert "<strong>35</strong>" in rows.group(1)  # 40 on hand - 5 reserved at WH-01
            for sku in HOSTILE_SKUS:
                hostile = client.get("/stock", params={"sku": sku})
                assert escaped(hostile.text) and "&lt;" in hostile.text
                assert "the projection has no stock" not in hostile.text
        # and `bus reconcile` leaves its report for the page too
        code, _ = reconcile(world)
        assert code == 1
        with sqlite3.connect(world.config_dir.parent / "var" / "bus.db") as db:
            audited = db.execute("SELECT actor, action, outcome, count FROM dlq_audit "
                                 "WHERE action = 'reconcile' ORDER BY id").fetchall()
            reports = db.execute("SELECT count(*) FROM journal WHERE event = "
                                 "'reconcile.done'").fetchone()
    assert audited == [("viewer", "reconcile", "denied", 0), ("operator", "reconcile", "ok", 3)]
    assert reports == (2,)


def test_the_reconcile_button_without_a_reconcile_section_says_what_to_set(
        client: TestClient, bus: Bus) -> None:
    login(client, "operator")
    page = client.get("/stock")
    assert "Run reconcile now" in page.text and "disabled" in page.text
    answer = client.post("/stock/reconcile", data={"csrf": csrf(client, "/stock")})
    assert answer.status_code == 400 and "reconcile.erp" in answer.text


# -- files ---------------------------------------------------------------------------------------
@pytest.mark.rabbitmq
def test_the_files_page_shows_the_calendar_quarantined_refused_and_control_totals(
        tmp_path: Path, rabbitmq_url: str) -> None:
    from tests.pos_file.support import drop, open_pos_bus, source_yaml
    from tests.pos_file.test_source import NAME, replace_line, sales

    # Given a source expecting store 0042's file by 00:00 UTC every day (so today's is due)
    expectation = ('calendar: [{store: "0042", pattern: "SALES_0042_*.DAT", by: "00:00", '
                   'timezone: UTC, days: [mon, tue, wed, thu, fri, sat, sun]}]')
    pos = open_pos_bus(tmp_path, rabbitmq_url, sources=source_yaml(extra=expectation))
    try:
        inbox = pos.inbox()
        with pos.running_source(pos.source()):
            wait_for(lambda: pos.events("pos_file.file_missing") != [], message="missing")
            # When a file with a wrong control total, a good one (late now) and hostile
            # names arrive
            drop(inbox, NAME, replace_line(sales(20), 22, 2, b"000000021"))
            wait_for(lambda: pos.events("pos_file.quarantined") != [], message="quarantined")
            drop(inbox, "SALES_0042_20240302.DAT", sales(3, seed=2))
            (inbox / f"SALES_0042_{HOSTILE_NAME}.DAT").write_bytes(sales(2, seed=3))
            wait_for(lambda: pos.events("pos_file.archived") != [], message="archived")
            wait_for(lambda: pos.events("pos_file.refused") != [], message="refused")
        add_users(pos.bus)
        with TestClient(make_app(pos.bus, secret=SECRET)) as client:
            login(client, "viewer")
            page = client.get("/files")
            overview = client.get("/").text
            assert client.get("/files", params={"days": "x<script>"}).status_code == 200
    finally:
        pos.close()
    # Then the page shows each part
    assert page.status_code == 200

    def table(name: str) -> str:
        found = re.search(rf'<table id="{name}">(.*?)</table>', page.text, re.S)
        assert found, page.text
        return found.group(1)

    calendar = table("calendar")
    assert "tills" in calendar and "SALES_0042_*.DAT" in calendar
    assert '<td class="error">late</td>' in calendar  # today's column: missing, then late
    assert "missing" in table("alerts") and "late" in table("alerts")
    assert re.search(r"<td>tills</td><td>0042</td><td class=\"n\">1</td>"
                     r"<td class=\"n\">3</td>", table("received")), table("received")
    controls = table("controls")
    assert NAME in controls and "record_count is 21" in controls
    assert NAME not in table("quarantined")
    refused = table("refused")
    assert "bad_name" in refused and "&lt;script&gt;" in refused
    assert escaped(page.text)
    # and the overview's tile counts the calendar's alerts
    assert '<span class="big">1</span> late · <span class="big">1</span> missing' in overview


# -- PostgreSQL ----------------------------------------------------------------------------------
@pytest.mark.postgres
def test_on_postgresql_the_tiles_stock_files_and_trace_pages_answer(
        tmp_path: Path, postgres_url: str) -> None:
    config_dir = build(tmp_path, postgres_url)
    with Bus.from_config_dir(config_dir, environ={}) as bus, \
            TestClient(make_app(bus, secret=SECRET)) as client:
        sagas(bus, sales_orders=2, short=2)
        bus.stock.apply([StockLevel(HOSTILE, "WH-01", Decimal(4), version=1)])
        login(client, "viewer")
        overview = client.get("/").text
        assert "2 order(s)" in overview and '<span class="big">2</span>' in overview
        assert "+4</span> last hour" in overview
        for path, params in (("/files", {}), ("/stock", {"sku": HOSTILE}),
                             ("/trace", {"key": "W-00001"})):
            page = client.get(path, params=params)
            assert page.status_code == 200, (path, page.text)
            assert escaped(page.text), path
        assert "<strong>4</strong>" in client.get("/stock", params={"sku": HOSTILE}).text
        token = csrf(client, "/stock")
        assert client.post("/stock/reconcile", data={"csrf": token}).status_code == 403
        row = next(r for r in client.get("/dead-letters").text.split("<tr>") if "2 pcs" in r)
        group = re.search(r"group=([0-9a-f]+)", row)
        assert group, row
        progress = client.get("/replays", params={"group": group.group(1)}).text
        assert "no replay sent for this group yet" in progress
        assert re.search(r"<td>new</td><td class=\"n\">2</td>", progress), progress


# -- replay progress -----------------------------------------------------------------------------
def test_a_group_replay_leads_to_its_progress_which_follows_the_running_bus(
        client: TestClient, bus: Bus) -> None:
    from tests.dlq_project import FIXED, set_mapping

    # Given the mapping is fixed and an operator replays the "2 pcs" group
    set_mapping(bus.config.root, FIXED)
    login(client, "operator")
    groups = client.get("/dead-letters").text
    row = next(r for r in groups.split("<tr>") if "2 pcs" in r)
    found = re.search(r'name="group" value="([0-9a-f]+)"', row)
    assert found, row
    group = found.group(1)
    answer = client.post("/dead-letters/replay", data={
        "group": group, "csrf": csrf(client, "/dead-letters"),
        "next": f"/replays?group={group}"})
    # Then the answer is the group's progress page: two replays waiting in the outbox
    assert answer.status_code == 200 and answer.url.path == "/replays"
    assert "queued 2 replay(s)" in answer.text and 'data-refresh="/replays/table?' in answer.text

    def stages() -> dict[str, int]:
        fragment = client.get("/replays/table", params={"group": group})
        assert fragment.status_code == 200 and "<html" not in fragment.text
        return {stage: int(n) for stage, n in re.findall(
            r"<tr[^>]*><td>([a-z ]+)</td><td class=\"n\">(\d+)</td>",
            fragment.text.split('id="letter-statuses"')[0])}

    assert stages() == {"waiting to publish": 2, "published": 0, "delivered": 0,
                        "failed again": 0}
    # When a bus runs, the progress follows it to the end
    with running(lambda stop: bus.run(stop, sources=[])):
        wait_for(lambda: stages()["delivered"] == 2, message="2 replays delivered")
    done = client.get("/replays", params={"group": group}).text
    assert "2 of 2 replay(s) settled: done" in done
    assert re.search(r"<td>replayed</td><td class=\"n\">2</td>", done), done
    # A viewer may watch; a hostile or unknown group is just an empty, escaped page
    client.post("/logout", data={"csrf": csrf(client, "/")})
    login(client, "viewer")
    hostile = client.get("/replays", params={"group": HOSTILE})
    assert hostile.status_code == 200 and escaped(hostile.text)
    assert "no such group" in hostile.text
    assert client.get("/replays").status_code == 400
    # and a crafted "next" cannot send anyone elsewhere
    token = csrf(client, "/")
    client.post("/logout", data={"csrf": token})
    login(client, "operator")
    away = client.post("/dead-letters/replay", data={
        "group": group, "csrf": csrf(client, "/"), "next": "/replays?//evil.example"},
        follow_redirects=False)
    assert away.headers["location"] == "/dead-letters"
