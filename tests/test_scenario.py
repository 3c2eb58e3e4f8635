"""The reference retail scenario end to end (config/bus.yaml, docs/scenario.md).

Golden tests run the real scenario config on RabbitMQ against the fake ERP and the fake shop
(real HTTP on loopback): a fixed-width sales file in -> the exact ERP SOAP requests out, compared
as canonical XML with tests/golden/*.xml; a web order in -> ERP reservations and sales order; a
short-stock order -> a business dead letter and nothing sent to the ERP. ``bus demo`` is run as a
user runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from lxml import etree

from integration_bus.cli import cli
from integration_bus.cli.demo import DemoRun, Scenario
from integration_bus.deadletters.console import DeadLetterConsole
from integration_bus.operators import Operator
from integration_bus.store.dead_letters import Selection
from tests.support.probe import wait_for

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
SOAP_BODIES = {"http://schemas.xmlsoap.org/soap/envelope/",
               "http://www.w3.org/2003/05/soap-envelope"}


@pytest.fixture
def scenario(tmp_path: Path, rabbitmq_url: str) -> Iterator[DemoRun]:
    """The scenario config on RabbitMQ with the fakes, ready (receiver up, first poll in)."""
    demo = DemoRun(REPO / "config", tmp_path / "var", Scenario(), broker_url=rabbitmq_url)
    stop = threading.Event()
    with demo.running(stop):
        demo.wait_ready(stop)
        yield demo


def requests_of(demo: DemoRun, *operations: str) -> list[bytes]:
    """Canonical XML (C14N) of the SOAP body element of every call of ``operations``."""
    out = []
    with demo.erp.state.lock:
        calls = [body for _, op, body in demo.erp.state.log if op in operations]
    for body in calls:
        envelope = etree.fromstring(body)
        (payload,) = [child for element in envelope if etree.QName(element).localname == "Body"
                      and etree.QName(element).namespace in SOAP_BODIES for child in element]
        out.append(_canonical(payload))
    return sorted(out)


def golden(name: str) -> list[bytes]:
    root = etree.parse(str(GOLDEN / name)).getroot()
    return sorted(_canonical(child) for child in root)


def _canonical(element: etree._Element) -> bytes:
    copy = etree.fromstring(etree.tostring(element))
    for node in copy.iter():  # indentation in the golden files is not content
        if node.text is not None and not node.text.strip():
            node.text = None
        node.tail = None
    etree.cleanup_namespaces(copy)
    return etree.tostring(copy, method="c14n")


def test_a_sales_file_becomes_exactly_the_golden_erp_postings(scenario: DemoRun) -> None:
    # Given a real fixed-width daily sales file from store 0042 (4 lines, one a till return)
    name = "SALES_0042_20240301_1.DAT"
    temp = scenario.inbox / f".{name}.tmp"
    shutil.copyfile(GOLDEN / name, temp)
    temp.rename(scenario.inbox / name)
    # When the bus takes it
    wait_for(lambda: scenario.erp.state.count("PostStockAdjustment") >= 4, timeout=60,
             message="4 postings reach the ERP")
    # Then the ERP got exactly these four goods movements (three issues, one customer return)
    assert requests_of(scenario, "PostStockAdjustment") == golden("sale_postings.xml")
    # And the stock decrement flows back: the projection follows the ERP's change log
    bus = scenario.bus
    assert bus is not None
    wait_for(lambda: (level := bus.stock.get("PEN-STB-BLU", "STORE-042")) is not None
             and level.on_hand == Decimal(4997), timeout=60, message="projection follows")
    archived = scenario.inbox.parent / "inbox.work" / "archive"
    wait_for(lambda: any(archived.rglob(name)), timeout=30, message="the file is archived")

    # When the till exports the same day again (a new header time: other bytes, another file)
    again = "SALES_0042_20240301_1_REEXPORT.DAT"
    data = (GOLDEN / name).read_bytes().replace(b"20240301 235900", b"20240302 061500", 1)
    assert data != (GOLDEN / name).read_bytes()
    (scenario.inbox / f".{again}.tmp").write_bytes(data)
    (scenario.inbox / f".{again}.tmp").rename(scenario.inbox / again)
    wait_for(lambda: any(archived.rglob(again)), timeout=30, message="the re-export is archived")
    # Then its lines are the same sales (output.key: business day + sale id): no new posting.
    # pos_sales republishes them (the bus sink takes no claim of its own); the next route's
    # ledger recognises them (docs/lifecycle.md)
    wait_for(lambda: bus.store.route_summary().get("sale_postings", {}).get("duplicate", 0)
             == 4, timeout=30, message="the ledger recognises the 4 sales")
    assert scenario.erp.state.count("PostStockAdjustment") == 4


def shopify_order(order_id: int, lines: list[tuple[str, int, str]]) -> dict[str, Any]:
    return {
        "id": order_id, "name": f"#{order_id % 10000}", "email": "ann@example.com",
        "created_at": "2026-11-27T10:00:00+01:00", "updated_at": "2026-11-27T10:00:00+01:00",
        "currency": "EUR", "financial_status": "paid", "taxes_included": True,
        "total_price": str(sum(Decimal(price) * qty for _, qty, price in lines)),
        "customer": {"id": 4711, "email": "ann@example.com", "first_name": "Ann",
                     "last_name": "Example"},
        "line_items": [{"id": order_id * 10 + i, "sku": sku, "quantity": qty, "price": price}
                       for i, (sku, qty, price) in enumerate(lines)]}


def send_order(demo: DemoRun, order_id: int, lines: list[tuple[str, int, str]]) -> None:
    from connectors.rest_shop.fakeshop.sender import Subscription, WebhookSender

    order = shopify_order(order_id, lines)
    sub = Subscription(url=f"http://127.0.0.1:{demo.webhook_port}/webhooks/acme",
                       platform="shopify", secret=b"demo-webhook-secret", topic="orders/create")
    sender = WebhookSender()
    try:
        attempts = sender.send(sender.delivery(sub, order, event_id=f"e-{order_id}"))
    finally:
        sender.close()
    assert attempts[-1].status == 200, attempts


def test_a_web_order_becomes_the_golden_reservations_and_sales_order(scenario: DemoRun) -> None:
    # Given stock at the web warehouse, when the shop sends a paid order of two lines
    send_order(scenario, 9_007_199_254_740_993,
               [("TSHIRT-BLK-M", 2, "19.99"), ("MUG-WHITE", 1, "8.50")])
    wait_for(lambda: scenario.erp.state.count("ReserveStock") >= 2
             and scenario.erp.state.count("CreateSalesOrder") >= 1, timeout=60,
             message="reservations and the sales order reach the ERP")
    # Then the ERP got exactly one reservation per line and one sales order, ids kept exact
    assert requests_of(scenario, "ReserveStock", "CreateSalesOrder") == golden(
        "web_order.xml")
    # And the reservation flows back to the shop as what can still be promised
    wait_for(lambda: scenario.shop_state.inventory.get(("TSHIRT-BLK-M", "WH-01"), (0, 0))[0]
             == 58, timeout=60, message="the shop sees 60 - 2 reserved")


def _captured_order(order_id: int) -> tuple[Any, Any, Any]:
    """One signed Shopify order body of two lines (a sender, its subscription, the delivery)."""
    from connectors.rest_shop.fakeshop.sender import Subscription, WebhookSender

    order = shopify_order(order_id, [("TSHIRT-BLK-M", 2, "19.99"), ("MUG-WHITE", 1, "8.50")])
    sender = WebhookSender()
    return sender, order, sender.delivery(Subscription(
        url="", platform="shopify", secret=b"demo-webhook-secret", topic="orders/create"),
        order, event_id="evt-original")


def _repost(demo: DemoRun, sender: Any, delivery: Any, topic: str = "orders/create",
            body: bytes | None = None) -> dict[str, Any]:
    """POST a captured body again with fresh delivery and event ids (and maybe a topic)."""
    import httpx

    from connectors.rest_shop.signatures import sign

    body = delivery.body if body is None else body
    headers = {**sender.headers(delivery, signature=sign(b"demo-webhook-secret", body)),
               "X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": str(uuid.uuid4()),
               "X-Shopify-Event-Id": str(uuid.uuid4())}
    answer = httpx.post(f"http://127.0.0.1:{demo.webhook_port}/webhooks/acme", content=body,
                        headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_a_replayed_order_makes_no_second_effect_and_a_wrong_topic_no_return(
        scenario: DemoRun) -> None:
    # Given one signed order body of two lines, captured
    sender, order, delivery = _captured_order(9_007_199_254_741_111)
    try:
        # When it is posted 5 times with fresh delivery and event ids
        statuses = [_repost(scenario, sender, delivery)["status"] for _ in range(5)]
        # and the shop re-sends the same order as a new body (another updated_at), and the
        # captured body is posted under the refunds/create topic
        resent = json.dumps({**order, "updated_at": "2026-11-27T10:05:00+01:00"}).encode()
        again = _repost(scenario, sender, delivery, body=resent)
        as_refund = _repost(scenario, sender, delivery, topic="refunds/create")
    finally:
        sender.close()
    # Then the receiver took the body once and the re-sent one once
    assert statuses == ["accepted"] + ["duplicate"] * 4
    assert again["status"] == "accepted" and as_refund["status"] == "accepted"
    bus = scenario.bus
    assert bus is not None
    # the refund topic's body is refused by the refund's input schema: a dead letter, no return
    wait_for(lambda: any(d["route"] == "web_returns" for d in bus.store.dead_letters()),
             timeout=60, message="the order under refunds/create is dead-lettered")
    (letter,) = [d for d in bus.store.dead_letters() if d["route"] == "web_returns"]
    assert "does not match schema shopify_refund@1" in letter["message"], letter["message"]
    # and the ERP got exactly one sales order and one reservation per line, nothing else
    erp = scenario.erp.state
    wait_for(lambda: erp.count("CreateSalesOrder") >= 1 and erp.count("ReserveStock") >= 2,
             timeout=60, message="the sales order and the reservations reach the ERP")
    assert scenario.settle(threading.Event(), timeout=60), "the bus settles"
    assert (erp.count("CreateSalesOrder"), erp.count("ReserveStock")) == (1, 2)
    assert erp.count("PostStockAdjustment") == 0  # no restock
    routes = bus.store.route_summary()
    # the re-sent order is the same order: web_orders republishes it (the bus sink takes no
    # claim of its own) and the next route's ledger recognises it; past that, it is there once
    assert routes["web_orders"]["received"] == 2, routes
    assert routes["order_availability"].get("duplicate", 0) == 1, routes
    assert routes["order_fulfilment"]["received"] == 1, routes
    wait_for(lambda: scenario.shop_state.inventory.get(("TSHIRT-BLK-M", "WH-01"), (0, 0))[0]
             == 58, timeout=60, message="the shop sees 60 - 2 reserved, once")


def test_a_short_order_is_a_business_dead_letter_and_never_reaches_the_erp(
        scenario: DemoRun) -> None:
    # Given the last hoodie at WH-01 (1 to promise)
    send_order(scenario, 9_007_199_254_741_001, [("WOO-HOODIE-GRY", 2, "39.00")])
    bus = scenario.bus
    assert bus is not None
    wait_for(lambda: len(bus.store.dead_letters()) == 1, timeout=60,
             message="the short order is dead-lettered")
    (letter,) = bus.store.dead_letters()
    assert letter["route"] == "order_availability" and letter["error_type"] == "StockShort"
    assert "'HOOD-GRY-M' 2 ordered, 1 available to promise" in letter["message"]
    # It is one group in the console, with its reason
    groups = DeadLetterConsole(bus, Operator.system("test")).groups(Selection())
    assert [(g["error_type"], g["route"], g["count"]) for g in groups] == [
        ("StockShort", "order_availability", 1)]
    # And nothing about it reached the ERP (an order that fits does, after it)
    send_order(scenario, 9_007_199_254_741_002, [("WOO-CAP-NVY", 1, "14.00")])
    wait_for(lambda: scenario.erp.state.count("CreateSalesOrder") >= 1, timeout=60,
             message="the next order goes through")
    assert scenario.erp.state.count("ReserveStock", containing="HOOD-GRY-M") == 0
    assert scenario.erp.state.count("CreateSalesOrder", containing="HOOD-GRY-M") == 0


def test_bus_demo_json_counts_add_up(tmp_path: Path) -> None:
    # A copy of the project's config, mappings and schemas: the demo's state goes under it
    for part in ("config", "mappings", "schemas"):
        shutil.copytree(REPO / part, tmp_path / part)
    result = CliRunner().invoke(cli, ["demo", "--config-dir", str(tmp_path / "config"),
                                       "--duration", "5", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["mode"] == "embedded" and summary["nothing_lost"] is True
    assert all(summary["checks"].values()), summary["checks"]
    routes = {row["route"]: row for row in summary["routes"]}
    sim = summary["simulated"]
    assert routes["pos_sales"]["received"] == sim["sale_lines"] > 0
    assert routes["order_availability"]["received"] == sim["orders_sent"]
    assert routes["order_availability"]["dead_letters"] == sim["short_orders_sent"] == 2
    assert routes["web_returns"]["received"] == sim["returns_sent"] > 0
    for row in summary["routes"]:
        assert row["received"] == (row["delivered"] + row["filtered"] + row["dead_lettered"]
                                   + row["in_retry"]), row
    assert summary["erp"]["sales_orders"] == sim["orders_sent"] - sim["short_orders_sent"]
    # the order race: one order re-sourced, one cancelled, one back-ordered, none left waiting
    assert summary["order_exceptions"] == {"total": 3, "resolved": 3, "re_sourced": 1,
                                           "back_ordered": 1, "cancelled": 1,
                                           "waiting_for_a_person": 0}
    # the prices: today's at the shop and the store, the future one held until its day
    assert summary["prices"] == {"shop_prices": 1, "store_price_files": 1,
                                 "held_until_their_day": 1}
    assert summary["shop"]["inventory_levels"] > 0 and summary["store_files"] > 0


def test_bus_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    for part in ("config", "mappings", "schemas"):
        shutil.copytree(REPO / part, tmp_path / part)
    proc = subprocess.Popen(
        [sys.executable, "-m", "integration_bus", "demo", "--config-dir",
         str(tmp_path / "config"), "--duration", "300", "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "BUS_BROKER_URL": ""})
    try:
        archive = tmp_path / "var" / "demo" / "pos" / "inbox.work" / "archive"
        wait_for(lambda: archive.exists() and any(archive.rglob("SALES_*")), timeout=120,
                 message="the demo is under way")
        proc.send_signal(signal.SIGINT)
        # promptly: no new order after Ctrl-C (each refused one was retried for 6 s: 45 s)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # Then it stopped early, on its own, with exit 0 and a summary of what it had done
    assert proc.returncode == 0, err.decode()[-2000:]
    summary = json.loads(out[out.index(b"{"):])
    assert summary["seconds"] < 300 and summary["simulated"]["files"] >= 1
    assert summary["checks"]["settled before stopping"] is False
