"""What a signed body is, whatever its headers say: a body posted again with fresh delivery and
event ids is a duplicate; a body without an ``id`` is named by its platform's id headers; every
header spelling the platforms document is read, conflicting ones are refused; with ``max_age``
a body older than that is dead-lettered once. Over real HTTP and RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from connectors.rest_shop.fakeshop import Subscription, WebhookSender
from tests.rest_shop.conftest import Hooks
from tests.rest_shop.support import (
    SECRETS,
    bus_running,
    open_bus,
    wait_listening,
    webhooks_yaml,
    write_config,
)
from tests.support.probe import Target, wait_for
from tests.support.services import free_port

pytestmark = pytest.mark.rabbitmq


def _order(order_id: int) -> dict[str, object]:
    return {"id": order_id, "name": f"#{order_id}", "financial_status": "paid",
            "updated_at": "2024-03-01T10:00:00-05:00",
            "line_items": [{"id": 1, "sku": "SKU-1", "quantity": 1, "price": "9.99"}]}


def _post(sub: Subscription, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(sub.url, content=body, headers=headers, timeout=10)


def test_a_signed_body_posted_again_with_fresh_ids_is_a_duplicate(hooks: Hooks) -> None:
    # Given one signed order body, captured
    sub = hooks.subscription("acme")
    captured = hooks.sender.delivery(sub, _order(8_100_001), event_id="evt-original")
    # When it is posted 5 times, each time with fresh delivery and event ids
    answers = []
    for n in range(5):
        again = hooks.sender.delivery(sub, {}, event_id=f"evt-fresh-{n}")
        headers = hooks.sender.headers(captured)
        headers["X-Shopify-Webhook-Id"], headers["X-Shopify-Event-Id"] = (
            again.delivery_id, str(again.event_id))
        answers.append(_post(sub, captured.body, headers))
    # Then the first is taken and the other four are duplicates of it: one envelope, once
    assert [a.json()["status"] for a in answers] == ["accepted"] + ["duplicate"] * 4
    assert {a.json()["envelope_id"] for a in answers} == {answers[0].json()["envelope_id"]}
    wait_for(lambda: len(hooks.delivered({8_100_001})) == 1, message="delivered once")
    assert len(hooks.delivered({8_100_001})) == 1


def _shopify(headers: dict[str, str], style: str) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        if not name.lower().startswith("x-shopify-"):
            out[name] = value
        elif style == "lower":
            out[name.lower()] = value
        elif style == "bare":  # events webhooks, current SDKs: shopify-hmac-sha256, ...
            out[name.lower().removeprefix("x-")] = value
        elif style == "Bare":
            out[name.removeprefix("X-")] = value
        else:
            out[name.upper()] = value
    return out


def _woo(headers: dict[str, str], style: str) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        if not name.lower().startswith("x-wc-"):
            out[name] = value
        elif style == "lower":
            out[name.lower()] = value
        elif style in ("bare", "Bare"):
            out[name.removeprefix("X-") if style == "Bare" else name.lower()[2:]] = value
        else:
            out[name.upper()] = value
    return out


STYLES = ["lower", "bare", "Bare", "UPPER"]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("shop", ["acme", "woo"])
def test_every_documented_header_spelling_is_accepted(hooks: Hooks, shop: str,
                                                      style: str) -> None:
    order_id = 8_200_000 + 10 * (shop == "woo") + STYLES.index(style)
    sub = hooks.subscription(shop)
    delivery = hooks.sender.delivery(sub, _order(order_id), event_id="evt-spelling")
    spell: Callable[[dict[str, str], str], dict[str, str]] = _shopify if shop == "acme" else _woo
    answer = _post(sub, delivery.body, spell(hooks.sender.headers(delivery), style))
    assert (answer.status_code, answer.json()["status"]) == (200, "accepted"), answer.text
    assert answer.json()["topic"] == sub.topic  # the topic was read in that spelling too


def test_one_header_sent_with_two_values_is_refused(hooks: Hooks) -> None:
    sub = hooks.subscription("acme")
    delivery = hooks.sender.delivery(sub, _order(8_300_001))
    headers = {**hooks.sender.headers(delivery), "shopify-topic": "refunds/create"}
    answer = _post(sub, delivery.body, headers)
    assert answer.status_code == 400 and "shopify-topic" in answer.json()["error"]
    assert not hooks.delivered({8_300_001})


@pytest.mark.parametrize("shop", ["acme", "woo"])
def test_a_signed_body_without_an_id_is_named_by_its_header_id(hooks: Hooks,
                                                               shop: str) -> None:
    # Given signed bodies without an "id" field (the platform's id headers name them)
    sub = hooks.subscription(shop)
    marker = uuid.uuid4().hex
    body = {"inventory_item_id": 7, "available": 3, "marker": marker}
    delivery = hooks.sender.delivery(sub, body, event_id="evt-no-id")
    # When the same delivery arrives twice, and another body under the same header id
    first, retry = hooks.sender.send_once(delivery), hooks.sender.send_once(delivery)
    other = hooks.sender.delivery(sub, {**body, "available": 4}, event_id="evt-no-id",
                                  delivery_id=delivery.delivery_id)
    different = hooks.sender.send_once(other)
    # Then the first is taken, its retry is a duplicate, and the other body is taken too (an
    # id header never stands in for a body it did not come with)
    assert (first.status, first.body["status"]) == (200, "accepted"), first.body
    assert (retry.status, retry.body["status"]) == (200, "duplicate")
    assert (different.status, different.body["status"]) == (200, "accepted")
    expected = "h:evt-no-id" if shop == "acme" else f"h:{delivery.delivery_id}"
    assert first.body["event_id"] == expected
    wait_for(lambda: len([e for e in hooks.target.envelopes
                          if e.payload.get("marker") == marker]) == 2, message="two taken")


def test_a_body_older_than_max_age_is_dead_lettered_once(tmp_path: Path,
                                                         rabbitmq_url: str) -> None:
    # Given a receiver that takes bodies up to 1 day old
    port = free_port()
    sources = webhooks_yaml(port).replace("      answer_within: 800ms",
                                          "      answer_within: 800ms\n      max_age: 1d")
    target = Target()
    bus = open_bus(write_config(tmp_path, rabbitmq_url, sources=sources), target)
    sender = WebhookSender(retry_delays=())
    sub = Subscription(f"http://127.0.0.1:{port}/webhooks/acme", "shopify",
                       SECRETS["ACME_NEW"].encode())
    try:
        with bus_running(bus):
            wait_listening(f"http://127.0.0.1:{port}/healthz")
            # When a body that says it was last updated years ago arrives, three times
            stale = sender.delivery(sub, _order(8_400_001))
            answers = [sender.send_once(stale) for _ in range(3)]
            # and one from today
            fresh_order = {**_order(8_400_002), "updated_at": _now_iso()}
            fresh = sender.send_once(sender.delivery(sub, fresh_order))
            # Then the old one is dead-lettered once (answered 200: nothing to retry) ...
            assert [(a.status, a.body["status"]) for a in answers] == [(200, "stale")] * 3
            (letter,) = bus.store.dead_letters()
            assert letter["error_type"] == "StaleWebhook"
            assert "older than the receiver's max_age" in letter["message"]
            # ... and today's is taken
            assert (fresh.status, fresh.body["status"]) == (200, "accepted")
            wait_for(lambda: target.count() == 1, message="the fresh order delivered")
    finally:
        sender.close()
        bus.close()


def _now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


def test_health_names_no_shop_and_the_api_schema_is_not_served(hooks: Hooks) -> None:
    health = httpx.get(f"{hooks.base}/healthz", timeout=5)
    assert health.json() == {"status": "ok"}
    assert "acme" not in health.text and "woo" not in health.text
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert httpx.get(f"{hooks.base}{path}", timeout=5).status_code == 404, path
