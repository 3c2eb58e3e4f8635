"""The shop sink against the fake shop on real HTTP: pacing, 429, 5xx, idempotency, lookup."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.rest_shop.fakeshop import ShopState
from connectors.rest_shop.sink import ShopSink
from integration_bus.connector import Envelope, PermanentError, TransientError
from integration_bus.runtime import Bus
from tests.rest_shop.support import bus_running, open_bus, write_config
from tests.support.probe import Target, wait_for

Shop = tuple[ShopState, str]


_TOKEN = '{kind: token, token: "${SHOP_TOKEN}", header: X-Shopify-Access-Token, scheme: null}'
_BASIC = '{kind: basic, username: ck_live, password: "${SHOP_TOKEN}"}'


@contextmanager
def _sink(root: Path, base_url: str, action: str, extra: str = "", *, auth: str = _TOKEN,
          rate: int = 50, burst: int = 10) -> Iterator[ShopSink]:
    """A rest_shop sink built from YAML by an embedded bus (real config validation)."""
    sinks = f"""
  shop:
    connector: rest_shop
    action: {action}
    shop: acme
    base_url: "{base_url}"
    auth: {auth}
    rate: {rate}
    burst: {burst}
    max_attempts: 4
    backoff: 50ms{extra}"""
    bus: Bus = open_bus(write_config(root, "", sinks=sinks), Target())
    sink = bus.sink("shop")
    assert isinstance(sink, ShopSink)
    try:
        yield sink
    finally:
        sink.close()
        bus.close()


@pytest.fixture
def make_sink(tmp_path: Path, shop: Shop) -> Iterator[Callable[..., ShopSink]]:
    """Build sinks against the fake shop; all closed after the test."""
    made = itertools.count()
    with ExitStack() as stack:
        def make(action: str, extra: str = "", **options: Any) -> ShopSink:
            root = tmp_path / f"bus-{next(made)}"
            return stack.enter_context(_sink(root, shop[1], action, extra, **options))
        yield make


@pytest.fixture
def inventory(make_sink: Callable[..., ShopSink]) -> ShopSink:
    return make_sink("inventory")


@pytest.fixture
def fulfilment(make_sink: Callable[..., ShopSink]) -> ShopSink:
    return make_sink("fulfilment")


def _level(sku: str = "SKU-1", version: int = 1, available: int = 5) -> Envelope:
    return Envelope.create("inventory.level_set", {"sku": sku, "location": "store-42",
                                                   "available": available, "version": version},
                           source="erp", idempotency_key=f"erp:{sku}:{version}")


def _shipment(order_id: int, key: str = "ship-1") -> Envelope:
    return Envelope.create("shipment.created", {
        "order_id": order_id, "lines": [{"sku": "SKU-1", "quantity": 1}],
        "tracking_number": "1Z999", "carrier": "UPS"}, source="wms", idempotency_key=key)


def test_retry_after_seconds_no_attempt_before_the_allowed_time(shop: Shop,
                                                                inventory: ShopSink) -> None:
    state, _ = shop
    state.throttle(2, "1")
    inventory.deliver(_level())
    attempts = state.count_attempts("inventory_levels")
    assert [a.status for a in attempts] == [429, 429, 200]
    for before, after in itertools.pairwise(attempts):
        assert after.at - before.at >= 1.0  # Retry-After: 1 was honoured every time
    assert state.inventory[("SKU-1", "store-42")] == (5, 1)


def test_retry_after_http_date_is_honoured(shop: Shop, inventory: ShopSink) -> None:
    state, _ = shop
    allowed = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    state.throttle(1, format_datetime(allowed, usegmt=True))
    inventory.deliver(_level())
    first, second = state.count_attempts("inventory_levels")
    assert (first.status, second.status) == (429, 200)
    assert second.wall >= allowed.timestamp()


def test_hostile_retry_after_is_capped(shop: Shop, make_sink: Callable[..., ShopSink]) -> None:
    state, _ = shop
    # Given a shop that asks for a day's pause, and a cap of 1.5 s
    state.throttle(1, "86400")
    sink = make_sink("inventory", "\n    max_retry_after: 1500ms")
    started = time.monotonic()
    sink.deliver(_level())
    # Then the sink waited the cap, not the day, and only then tried again
    first, second = state.count_attempts("inventory_levels")
    assert 1.5 <= second.at - first.at < 10 and time.monotonic() - started < 10


def test_a_wait_beyond_the_inline_limit_goes_back_to_the_retry_tiers(
        shop: Shop, make_sink: Callable[..., ShopSink]) -> None:
    state, _ = shop
    state.throttle(1, "86400")
    sink = make_sink("inventory", "\n    max_retry_after: 30s\n    max_inline_wait: 1s")
    with pytest.raises(TransientError) as caught:
        sink.deliver(_level())
    assert caught.value.context["retry_after_ms"] == 30_000
    assert caught.value.context["shop"] == "acme" and "envelope_id" in caught.value.context
    # a redelivery before the allowed time does not reach the shop at all
    with pytest.raises(TransientError) as again:
        sink.deliver(_level())
    assert 28_000 < again.value.context["retry_after_ms"] <= 30_000
    assert len(state.count_attempts("inventory_levels")) == 1


def test_max_attempts_are_respected(shop: Shop, inventory: ShopSink) -> None:
    state, _ = shop
    state.throttle(100, "0")
    with pytest.raises(TransientError, match="gave up after 4 attempt"):
        inventory.deliver(_level())
    assert len(state.count_attempts("inventory_levels")) == 4
    state.throttle(0, "0")
    state.fail(100)
    with pytest.raises(TransientError, match="503"):
        inventory.deliver(_level(version=2))
    assert len(state.count_attempts("inventory_levels")) == 8


def test_post_carries_the_idempotency_key_so_a_repeat_is_one_effect(
        shop: Shop, fulfilment: ShopSink) -> None:
    state, _ = shop
    (order,) = state.add_orders(1)
    state.fail(1)  # the first POST meets a 503: retried with the same key
    fulfilment.deliver(_shipment(order.id))
    fulfilment.deliver(_shipment(order.id))  # a redelivery after a crash
    posts = [r for r in state.count_attempts("fulfillments") if r.method == "POST"]
    assert [p.status for p in posts] == [503, 201, 201]
    assert {p.idempotency_key for p in posts} == {"ship-1"}
    assert state.effects["fulfilment:ship-1"] == 1
    assert fulfilment.lookup(_shipment(order.id)) is True
    assert fulfilment.lookup(_shipment(order.id, key="ship-2")) is False


def test_without_an_idempotency_header_post_is_retried_only_after_a_lookup(
        shop: Shop, make_sink: Callable[..., ShopSink]) -> None:
    state, _ = shop
    (order,) = state.add_orders(1)
    sink = make_sink("fulfilment", "\n    idempotency_header: null")
    state.fail(1)
    sink.deliver(_shipment(order.id))
    calls = [(r.method, r.status) for r in state.count_attempts("fulfillments")]
    assert calls == [("POST", 503), ("GET", 200), ("POST", 201)]
    assert all(r.idempotency_key is None for r in state.count_attempts("fulfillments"))
    # a redelivery (attempt > 0) looks first and does not post again
    sink.deliver(_shipment(order.id).next_attempt())
    assert [r.method for r in state.count_attempts("fulfillments")][-1] == "GET"
    assert state.effects["fulfilment:ship-1"] == 1


def test_inventory_is_compare_and_set_on_version(shop: Shop, inventory: ShopSink) -> None:
    state, _ = shop
    inventory.deliver(_level(version=2, available=7))
    inventory.deliver(_level(version=1, available=99))  # late and older: refused, not an error
    assert state.inventory[("SKU-1", "store-42")] == (7, 2)


def test_the_token_bucket_paces_requests(shop: Shop, make_sink: Callable[..., ShopSink]) -> None:
    state, _ = shop
    orders = state.add_orders(12)
    sink = make_sink("order_status", rate=20, burst=2)
    for order in orders:
        sink.deliver(Envelope.create("order.status", {"order_id": order.id, "status": "shipped"},
                                     source="erp"))
    times = [r.at for r in state.count_attempts("/orders/")]
    assert len(times) == 12
    assert times[-1] - times[0] >= (12 - 2) / 20 * 0.95
    for i in range(len(times)):  # never more than burst + rate * t in any window
        window = [t for t in times[i:] if t - times[i] <= 0.25]
        assert len(window) <= 2 + 20 * 0.25 + 1


def test_basic_auth_and_refusals_are_permanent_naming_the_problem(
        shop: Shop, make_sink: Callable[..., ShopSink]) -> None:
    state, _ = shop
    state.token, state.basic = None, ("ck_live", "cs_live")
    sink = make_sink("order_status", auth=_BASIC)
    with pytest.raises(PermanentError) as refused:
        sink.deliver(Envelope.create("order.status", {"order_id": 1, "status": "x"},
                                     source="erp"))
    assert refused.value.context["status"] == 401
    state.basic = ("ck_live", "shpat-test-token")
    sink = make_sink("fulfilment", auth=_BASIC)
    with pytest.raises(PermanentError) as missing:
        sink.deliver(_shipment(12345))
    assert missing.value.context["status"] == 404 and "order_id" in str(missing.value)
    envelope = Envelope.create("shipment.created", {"order_id": 1}, source="wms")
    with pytest.raises(PermanentError) as bad:
        sink.deliver(envelope)
    assert bad.value.context["field"] == "lines"
    assert bad.value.context["envelope_id"] == envelope.id


@pytest.mark.rabbitmq
def test_through_the_bus_throttled_pushes_arrive_once_each(tmp_path: Path, shop: Shop,
                                                           rabbitmq_url: str) -> None:
    state, url = shop
    sinks = f"""
  stock:
    connector: rest_shop
    action: inventory
    shop: acme
    base_url: "{url}"
    auth: {_TOKEN}
    rate: 40"""
    routes = """
  stock:
    from: [inventory.level_set]
    to: [stock]
    retry: {max_attempts: 10, initial_delay: 200ms, multiplier: 1}"""
    bus = open_bus(write_config(tmp_path, rabbitmq_url, sinks=sinks, routes=routes), Target())
    # Given a shop that throttles three times with Retry-After: 1
    state.throttle(3, "1")
    publisher = bus.publisher()
    levels = [_level(sku=f"SKU-{i}", version=1, available=i) for i in range(20)]
    assert publisher.publish_many(levels) == [None] * 20
    publisher.close()
    with bus_running(bus):
        wait_for(lambda: len(state.inventory) == 20, timeout=60, message="20 levels applied")
    bus.close()
    # Then each level was applied once, and no attempt came before the time the 429 allowed
    assert all(n == 1 for n in state.effects.values()) and len(state.effects) == 20
    attempts = state.count_attempts("inventory_levels")
    throttled = [r.at for r in attempts if r.status == 429]
    assert len(throttled) == 3
    for at in throttled:  # one worker: nothing else was in flight when a 429 went out
        assert not [r for r in attempts if at < r.at < at + 1.0]


def _cancel(key: str, quantity: int, refund: str | None) -> Envelope:
    return Envelope.create("shop.order.cancel_lines", {
        "order_id": "9007199254741001", "currency": "EUR", "reason": "no stock anywhere",
        "lines": [{"line_no": 2, "sku": "BEANIE-GRN", "quantity": quantity, "refund": refund}]},
        source="saga", idempotency_key=key)


def test_cancel_lines_cancels_and_refunds_a_line_once_whatever_repeats(
        shop: Shop, make_sink: Callable[..., ShopSink]) -> None:
    state, _ = shop
    sink = make_sink("cancel_lines")
    # When a line is cancelled with its refund, then the same request again, then the same
    # totals under another key (a saga that lost its ledger row, say)
    sink.deliver(_cancel("o1>shop-cancel:2", 1, "18.00"))
    sink.deliver(_cancel("o1>shop-cancel:2", 1, "18.00").next_attempt())
    sink.deliver(_cancel("o1>shop-cancel:2b", 1, "18.00"))
    # Then the shop cancelled and refunded it once
    line = state.cancellations["9007199254741001"]["2"]
    assert line == {"sku": "BEANIE-GRN", "quantity": 1, "refunded": "18.00"}
    assert state.effects["cancel:9007199254741001:BEANIE-GRN"] == 1
    assert state.effects["refund:9007199254741001:BEANIE-GRN"] == 1
    # and a larger total refunds only the difference
    sink.deliver(_cancel("o1>shop-cancel:2c", 2, "36.00"))
    assert state.cancellations["9007199254741001"]["2"]["refunded"] == "36.00"
    assert state.effects["refund:9007199254741001:BEANIE-GRN"] == 2


def test_cancel_lines_needs_decimal_text_for_a_refund(
        make_sink: Callable[..., ShopSink]) -> None:
    sink = make_sink("cancel_lines")
    bad = Envelope.create("shop.order.cancel_lines", {
        "order_id": "1", "lines": [{"sku": "X", "quantity": 1, "refund": 18.0}]},
        source="saga", idempotency_key="k")
    with pytest.raises(PermanentError, match="refund"):
        sink.deliver(bad)
