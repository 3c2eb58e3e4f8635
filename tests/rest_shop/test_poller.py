"""The order poll against the fake shop: pagination, cursor, and a crash mid-poll."""

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

from connectors.rest_shop import make_plugin
from connectors.rest_shop.fakeshop import ShopState
from integration_bus.runtime import Bus
from integration_bus.scheduler import POLL_TASK, make_scheduler
from integration_bus.store.schema import cursors, outbox
from tests.rest_shop.support import SECRETS, bus_running, open_bus, write_config
from tests.support.outbox import relay_to_dead_letters
from tests.support.probe import Target, probe_plugin, registry_with, wait_for

REPO = Path(__file__).resolve().parents[2]
Shop = tuple[ShopState, str]


def _poll_yaml(url: str, platform: str, interval: str = "1h") -> str:
    return f"""
  orders:
    connector: rest_shop
    poll:
      shop: acme
      platform: {platform}
      base_url: "{url}"
      auth: {{kind: token, token: "${{SHOP_TOKEN}}"}}
      page_size: 5
      interval: {interval}"""


def _staged(bus: Bus) -> list[dict[str, Any]]:
    with bus.store.db.begin() as conn:
        rows = conn.execute(outbox.select().order_by(outbox.c.id)).mappings().all()
    return [orjson.loads(r["envelope"]) if isinstance(r["envelope"], str | bytes)
            else r["envelope"] for r in rows]


def test_link_pagination_takes_every_order_once_then_only_news(tmp_path: Path,
                                                               shop: Shop) -> None:
    state, url = shop
    state.add_orders(23, same_second=2)  # pairs share a second: the cursor's tie case
    bus = open_bus(write_config(tmp_path, "", sources=_poll_yaml(url, "shopify")), Target())
    try:
        assert bus.poll("orders") == 23
        lists = state.count_attempts("/orders.json")
        assert len(lists) == 5 and sum("page_info=" in r.path for r in lists) == 4
        envelopes = _staged(bus)
        assert len({e["idempotency_key"] for e in envelopes}) == 23
        assert {e["type"] for e in envelopes} == {"shop.shopify.order_updated"}
        assert {e["payload"]["id"] for e in envelopes} == set(state.orders)  # exact big ids
        assert bus.poll("orders") == 0  # nothing new: the boundary pair is not taken again
        touched = state.touch(next(iter(state.orders)))
        state.add_orders(3)
        assert bus.poll("orders") == 4
        news = _staged(bus)[23:]
        assert touched.id in {e["payload"]["id"] for e in news}
    finally:
        bus.close()


def test_page_numbers_survive_orders_moving_between_pages(tmp_path: Path, shop: Shop) -> None:
    state, url = shop
    orders = state.add_orders(12, same_second=12)  # twelve orders in one second
    state.add_orders(11)
    moved: list[int] = []

    def move_one(page: int) -> None:  # between two pages an early order is updated again
        if not moved and len(state.count_attempts("/wc/v3/orders")) == 2:
            moved.append(state.touch(orders[0].id).id)  # taken on page 1

    state.on_list = move_one
    bus = open_bus(write_config(tmp_path, "", sources=_poll_yaml(url, "woocommerce")), Target())
    try:
        staged = bus.poll("orders")
        envelopes = _staged(bus)
        latest = {o.id: o.updated.strftime("%Y-%m-%dT%H:%M:%S") for o in state.orders.values()}
        taken = {(e["payload"]["id"], e["payload"]["date_modified_gmt"]) for e in envelopes}
        assert set(latest.items()) <= taken  # every order's latest version, none skipped
        assert staged == len(envelopes) == 24  # 23 orders + the moved one's new version
        pages = [r.path for r in state.count_attempts("/wc/v3/orders")]
        assert any("page=2" in p for p in pages) and any("page=3" in p for p in pages)
        assert moved  # the move happened mid-poll
    finally:
        bus.close()


def test_the_scheduler_plans_the_poll_on_celery_beat(tmp_path: Path, shop: Shop) -> None:
    state, url = shop
    state.add_orders(3)
    config_dir = write_config(tmp_path, "", sources=_poll_yaml(url, "shopify", interval="30s"))
    registry = registry_with(probe_plugin(Target()), make_plugin())
    scheduler = make_scheduler(config_dir, environ=SECRETS, registry=registry)
    entry = scheduler.app.conf.beat_schedule["poll-orders"]
    assert entry["task"] == POLL_TASK and entry["schedule"].total_seconds() == 30
    assert scheduler.app.tasks[POLL_TASK].apply(args=("orders",)).get() == 3
    scheduler.bus().close()


@pytest.mark.rabbitmq
def test_a_poll_killed_after_publishing_loses_nothing_and_repeats_no_effect(
        tmp_path: Path, shop: Shop, rabbitmq_url: str) -> None:
    state, url = shop
    state.add_orders(23)
    routes = """
  orders:
    from: [shop.shopify.order_updated]
    to: [probe]"""
    config_dir = write_config(tmp_path, rabbitmq_url, routes=routes,
                              sources=_poll_yaml(url, "shopify", interval="50ms"))
    target = Target()
    bus = open_bus(config_dir, target)  # declares the topology
    reached, release = threading.Event(), threading.Event()

    def hold_page_three(page: int) -> None:
        if page == 3:
            reached.set()
            release.wait(30)

    state.on_list = hold_page_three
    # Given a poll in its own process that published pages 1 and 2 (confirmed, in the queue)
    log = (tmp_path / "child.log").open("wb")
    child = subprocess.Popen([sys.executable, "-m", "tests.rest_shop.poll_child",
                              str(config_dir)], cwd=REPO, env={**os.environ},
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        assert reached.wait(60), "the poll never asked for page 3"
        wait_for(lambda: getattr(bus.transport.queue_stats("bus.route.orders"), "messages",
                                 0) == 10, message="pages 1 and 2 published by the relay")
        # When the process is killed, and (worst case) its cursor is lost as if it had been
        # saved only after publishing — and its poll lease is gone (expired)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        log.close()
        release.set()
    state.on_list = None
    with bus.store.db.begin() as conn:
        conn.execute(delete(cursors).where(cursors.c.key.in_(["orders:orders",
                                                              "lease:poll:orders"])))
    # Then a new run polls everything again, and every order has exactly one effect
    with bus_running(bus):
        wait_for(lambda: target.count() == 23, timeout=60, message="all 23 orders delivered")
        wait_for(lambda: bus.store.count_events("duplicate", route="orders") >= 10,
                 message="the re-published orders absorbed by the ledger")
    bus.close()
    assert target.duplicates() == {}
    assert {e.payload["id"] for e in target.envelopes} == set(state.orders)


@pytest.mark.rabbitmq
def test_a_polled_order_no_route_takes_is_dead_lettered_with_its_source(
        tmp_path: Path, shop: Shop, rabbitmq_url: str) -> None:
    # Given a bus on RabbitMQ where no route takes shop orders, and two orders at the shop
    state, url = shop
    state.add_orders(2)
    routes = """
  other:
    from: [other.thing]
    to: [probe]"""
    bus = open_bus(write_config(tmp_path, rabbitmq_url, sources=_poll_yaml(url, "shopify"),
                                routes=routes), Target())
    try:
        # When a poll stages them with its cursor and the relay publishes them
        assert bus.poll("orders") == 2
        assert bus.context("orders").cursors.get("orders") is not None
        # Then each is a dead letter (not lost, not retried forever) that says where it came
        # from: the shop, the order, its update time and the page it was on
        letters = relay_to_dead_letters(bus, 2)
        assert {d["error_type"] for d in letters} == {"UnroutableError"}
        assert {d["source_ref"]["order_id"] for d in letters} == {str(i) for i in state.orders}
        assert {(d["source_ref"]["shop"], d["source_ref"]["page"]) for d in letters} == {
            ("acme", 1)}
        assert all(d["source_ref"]["updated_at"] for d in letters)
    finally:
        bus.close()
