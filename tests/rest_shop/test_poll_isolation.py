"""Ingress isolation for polls (fault suite): a polled order that cannot be taken (no id, no
update time), cannot be encoded (nested 300 levels) or is bigger than ``broker.max_message`` is
dead-lettered on its own, once, with the reason; the orders around it are staged and published,
the cursor moves past it, and no poll fails because of it. Real HTTP, real RabbitMQ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors.rest_shop.fakeshop import ShopState
from integration_bus.relay import OutboxRelay
from tests.rest_shop.support import open_bus, write_config
from tests.support.probe import Target

pytestmark = [pytest.mark.rabbitmq, pytest.mark.faults]


def _nested(levels: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    inner = payload
    for _ in range(levels):
        inner["a"] = {}
        inner = inner["a"]
    return payload


def test_unpublishable_polled_orders_settle_alone(tmp_path: Path,
                                                  shop: tuple[ShopState, str],
                                                  rabbitmq_url: str) -> None:
    state, url = shop
    orders = state.add_orders(6)
    orders[1].overlay = {"deep": _nested(300)}
    orders[2].overlay = {"updated_at": "yesterday"}
    orders[3].overlay = {"note": "x" * 10_000}
    orders[4].overlay = {"id": None}
    sources = f"""
  orders:
    connector: rest_shop
    poll:
      shop: acme
      platform: shopify
      base_url: "{url}"
      auth: {{kind: token, token: "${{SHOP_TOKEN}}"}}
      page_size: 50
      interval: 1h"""
    config_dir = write_config(tmp_path, rabbitmq_url, sources=sources)
    bus_yaml = config_dir / "bus.yaml"
    bus_yaml.write_text(bus_yaml.read_text().replace("retry_tiers:",
                                                     "max_message: 4096, retry_tiers:"))
    bus = open_bus(config_dir, Target())
    try:
        # When the shop is polled: the order that cannot be encoded and the two that cannot be
        # placed are dead-lettered at once; the poll succeeds with the other three
        assert bus.poll("orders") == 3
        letters = {d["source_ref"].get("order_id"): d for d in bus.store.dead_letters()}
        assert set(letters) == {str(orders[1].id), str(orders[2].id), None}
        assert letters[str(orders[1].id)]["error_type"] == "UnpublishableError"
        assert "cannot be encoded" in letters[str(orders[1].id)]["message"]
        assert "ISO-8601" in letters[str(orders[2].id)]["message"]
        assert "without an id" in letters[None]["message"]
        # And the relay publishes two of the staged three; the one over the message limit
        # becomes a dead letter of its own instead of blocking the outbox
        relay = OutboxRelay(bus.store, bus.publisher)
        while relay.relay_once():
            pass
        relay.close()
        assert relay.published == 2 and bus.store.outbox_pending() == {}
        big = [d for d in bus.store.dead_letters() if d["reason"] == "unpublishable"]
        assert len(big) == 1 and "over the 4,096-byte message limit" in big[0]["message"]
        assert big[0]["envelope"]["payload"]["id"] == orders[3].id
        # And polling again neither stages nor dead-letters anything twice
        assert bus.poll("orders") == 0
        assert len(bus.store.dead_letters()) == 4
    finally:
        bus.close()
