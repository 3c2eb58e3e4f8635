"""The webhook receiver against the real RabbitMQ and real HTTP on loopback."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

import httpx
import pytest

from connectors.rest_shop.fakeshop import Order
from connectors.rest_shop.signatures import sign
from tests.rest_shop.conftest import Hooks
from tests.rest_shop.support import SECRETS
from tests.support.probe import wait_for

pytestmark = pytest.mark.rabbitmq


def _order(order_id: int, price: str = "19.99") -> dict[str, object]:
    return {"id": order_id, "name": f"#{order_id % 10_000}", "financial_status": "paid",
            "updated_at": "2024-03-01T10:00:00-05:00", "total_price": price,
            "line_items": [{"id": order_id * 10, "sku": "SKU-1", "quantity": 1,
                            "price": price}]}


def test_both_rotation_secrets_verify_and_a_third_does_not(hooks: Hooks) -> None:
    # Given a shop in the middle of a secret rotation (new and old secret configured)
    new = hooks.subscription("acme")
    old = hooks.subscription("acme", secret=SECRETS["ACME_OLD"])
    stranger = hooks.subscription("acme", secret="some-other-secret")
    # When each signs one order
    answers = [hooks.sender.send_once(hooks.sender.delivery(sub, _order(1000 + i)))
               for i, sub in enumerate((new, old, stranger))]
    # Then the new and the old secret are accepted, the third is 401 and nothing of it is kept
    assert [a.status for a in answers] == [200, 200, 401]
    assert [a.body.get("status") for a in answers[:2]] == ["accepted", "accepted"]
    wait_for(lambda: len(hooks.delivered({1000, 1001, 1002})) == 2,
             message="two accepted orders delivered")
    assert sorted(e.payload["id"] for e in hooks.delivered({1000, 1001, 1002})) == [1000, 1001]


def test_every_2xx_came_after_the_broker_confirmed(hooks: Hooks) -> None:
    sub = hooks.subscription("acme")
    attempts = [hooks.sender.send_once(hooks.sender.delivery(sub, _order(2000 + i)))
                for i in range(20)]
    assert all(a.status == 200 for a in attempts)
    confirmed = {e.id: hooks.confirms.confirmed[e.idempotency_key]
                 for e in hooks.confirms.published}
    for attempt in attempts:
        assert confirmed[attempt.body["envelope_id"]] < attempt.answered


def test_large_ids_and_woocommerce_fractions_stay_exact(hooks: Hooks) -> None:
    # Given ids beyond 2**53 (where a float loses digits) and beyond 2**64, and WooCommerce's
    # prices as JSON numbers
    shopify = _order(2**53 + 1)
    shopify["customer"] = {"id": 2**64 + 7}
    woo = Order(id=2**63 - 1, number=5, created=datetime(2024, 3, 1),
                updated=datetime(2024, 3, 1, 1), lines=[("SKU-9", 3, Decimal("14.99"))]
                ).woocommerce()
    acme, shop = hooks.subscription("acme"), hooks.subscription("woo")
    assert hooks.sender.send_once(hooks.sender.delivery(acme, shopify)).status == 200
    assert hooks.sender.send_once(hooks.sender.delivery(shop, woo)).status == 200
    wait_for(lambda: len(hooks.delivered({2**53 + 1, 2**63 - 1})) == 2,
             message="both orders delivered")
    by_type = {e.type: e for e in hooks.delivered({2**53 + 1, 2**63 - 1})}
    # Then integers are exact (beyond 64 bits as decimal text) and fractions exact decimals
    order = by_type["shop.shopify.order_created"].payload
    assert order["id"] == 2**53 + 1 and order["customer"]["id"] == str(2**64 + 7)
    line = by_type["shop.woocommerce.order_created"].payload["line_items"][0]
    assert by_type["shop.woocommerce.order_created"].payload["id"] == 2**63 - 1
    assert line["price"] == "14.99" and line["quantity"] == 3


def test_woocommerce_creation_ping_is_answered_200_and_publishes_nothing(hooks: Hooks) -> None:
    woo = hooks.subscription("woo", sub_id=42)
    registry = hooks.bus.metrics.registry
    labels = {"source": "hooks", "shop": "woo", "outcome": "ping"}
    published = len(hooks.confirms.published)
    pings = registry.get_sample_value("rest_shop_webhooks_total", labels) or 0.0
    attempt = hooks.sender.ping(woo)
    assert attempt.status == 200 and attempt.body == {"status": "ping"}
    assert len(hooks.confirms.published) == published  # nothing went to the broker
    assert registry.get_sample_value("rest_shop_webhooks_total", labels) == pings + 1
    # a real order after it goes through
    assert hooks.sender.send_once(hooks.sender.delivery(woo, _order(7, "1.00"))).status == 200
    wait_for(lambda: len(hooks.delivered({7})) == 1, message="the order after the ping")
    # a ping to a Shopify shop is no ping: unsigned, it is refused
    assert hooks.sender.ping(hooks.subscription("acme")).status == 401


def test_bodies_over_the_cap_are_refused_413(hooks: Hooks) -> None:
    sub = hooks.subscription("acme")
    big = _order(9)
    big["note"] = "x" * 70_000  # max_body is 64 KiB in this config
    delivery = hooks.sender.delivery(sub, big)
    assert hooks.sender.send_once(delivery).status == 413
    # the same without a Content-Length (chunked): refused while streaming
    headers = hooks.sender.headers(delivery)

    def chunks() -> object:
        for start in range(0, len(delivery.body), 8192):
            yield delivery.body[start:start + 8192]

    response = httpx.post(sub.url, content=chunks(), headers=headers)  # type: ignore[arg-type]
    assert response.status_code == 413
    assert not [e for e in hooks.confirms.published if e.payload.get("id") == 9]


def test_an_authentic_body_that_is_not_json_is_dead_lettered_once(hooks: Hooks) -> None:
    sub = hooks.subscription("acme")
    body = b'{"id": 12, "note": "PRIVATE-NOTE-TEXT", "line_items": ['  # signed, but cut off
    headers = {**hooks.sender.headers(hooks.sender.delivery(sub, {"id": 0}),
                                      signature=sign(sub.secret, body)),
               "X-Shopify-Webhook-Id": "delivery-bad-json"}
    answers = [httpx.post(sub.url, content=body, headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [400, 400, 400]
    assert answers[0].json()["delivery_id"] == "delivery-bad-json"
    assert answers[0].json()["field"] == "body"
    letters = hooks.dead_letters("delivery-bad-json")
    assert len(letters) == 1  # one per delivery id, not one per retry
    assert letters[0]["error_type"] == "PayloadError"
    assert "PRIVATE-NOTE-TEXT" in letters[0]["envelope"]["raw"]  # kept for the operator


def test_a_topic_no_route_takes_is_dead_lettered_not_lost(hooks: Hooks) -> None:
    # Given a topic whose type (shop.shopify.product_updated) no route takes
    sub = hooks.subscription("acme", topic="products/update")
    delivery = hooks.sender.delivery(sub, {"id": 31, "title": "Hoodie"})
    # When it is delivered (and delivered again)
    first, again = hooks.sender.send_once(delivery), hooks.sender.send_once(delivery)
    # Then it is in the dead-letter store (a place, not nowhere) and the shop stops retrying
    assert (first.status, first.body["status"]) == (200, "dead_lettered")
    assert (again.status, again.body["status"]) == (200, "duplicate")
    (letter,) = hooks.dead_letters(delivery.delivery_id)
    assert letter["error_type"] == "UnroutableError"
    assert letter["source_ref"]["topic"] == "products/update"
    assert not hooks.delivered({31})


def test_secrets_and_raw_bodies_never_reach_the_logs(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
        hooks: Hooks) -> None:
    # capfd and caplog first: pytest tears fixtures down in reverse, so the capture ends only
    # after the bus has stopped (its threads wrote into a closing capture file: a segfault)
    caplog.set_level(logging.DEBUG)
    marker = "RAW-BODY-MARKER-5d1c"
    sub = hooks.subscription("acme")
    payload = _order(77)
    payload["note"] = marker
    # accepted, duplicate, bad signature, malformed, too large, truncated
    delivery = hooks.sender.delivery(sub, payload)
    assert hooks.sender.send_once(delivery).status == 200
    assert hooks.sender.send_once(delivery).status == 200
    assert hooks.sender.send_once(delivery, tamper="bad_hmac").status == 401
    bad = (b'{"note": "' + marker.encode() + b'", ')
    assert httpx.post(sub.url, content=bad, headers={
        **hooks.sender.headers(delivery, signature=sign(sub.secret, bad)),
        "X-Shopify-Webhook-Id": "bad-1"}).status_code == 400
    assert hooks.sender.send_truncated(hooks.sender.delivery(sub, payload)).status is None
    wait_for(lambda: len(hooks.delivered({77})) == 1, message="the accepted order")
    logged = capfd.readouterr()
    text = caplog.text + logged.out + logged.err
    assert "webhook.unauthorized" in text and "source.rejected" in text  # logs were captured
    for secret in SECRETS.values():
        assert secret not in text
    assert marker not in text
