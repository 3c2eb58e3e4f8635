"""Fixtures for the rest_shop tests: a running bus with the webhook receiver, the fake shop."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from connectors.rest_shop.fakeshop import AppServer, ShopState, Subscription, WebhookSender
from connectors.rest_shop.fakeshop.api import build_shop_app
from integration_bus.connector import Envelope
from integration_bus.runtime import Bus
from tests.rest_shop.support import (
    SECRETS,
    ConfirmLog,
    bus_running,
    open_bus,
    record_confirms,
    wait_listening,
    webhooks_yaml,
    write_config,
)
from tests.support.probe import Target
from tests.support.services import free_port


@dataclass
class Hooks:
    """A running bus: receiver ``hooks`` on ``base`` → route ``orders`` (shop.#) → probe."""

    base: str
    bus: Bus
    target: Target
    confirms: ConfirmLog
    sender: WebhookSender

    def delivered(self, ids: set[object]) -> list[Envelope]:
        """Envelopes the probe received whose payload id is one of ``ids``."""
        with self.target.lock:
            return [e for e in self.target.envelopes if e.payload.get("id") in ids]

    def dead_letters(self, delivery_id: str) -> list[dict[str, Any]]:
        return [d for d in self.bus.store.dead_letters()
                if (d["source_ref"] or {}).get("delivery_id") == delivery_id]

    def subscription(self, shop: str = "acme", *, secret: str | None = None,
                     topic: str | None = None, sub_id: int = 1) -> Subscription:
        platform = "shopify" if shop == "acme" else "woocommerce"
        default = SECRETS["ACME_NEW"] if shop == "acme" else SECRETS["WOO_SECRET"]
        return Subscription(f"{self.base}/webhooks/{shop}", platform,  # type: ignore[arg-type]
                            (secret or default).encode(),
                            topic=topic or ("orders/create" if platform == "shopify"
                                            else "order.created"), id=sub_id)


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory, module_rabbitmq_url: str) -> Iterator[Hooks]:
    """One running bus per test module: tests use ids of their own and filter by them."""
    tmp_path, rabbitmq_url = tmp_path_factory.mktemp("hooks"), module_rabbitmq_url
    port = free_port()
    target = Target()
    routes = """
  orders:
    from: [shop.shopify.order_created, shop.woocommerce.order_created]
    to: [probe]"""
    bus = open_bus(write_config(tmp_path, rabbitmq_url, sources=webhooks_yaml(port),
                                routes=routes), target)
    confirms = record_confirms(bus)
    sender = WebhookSender(retry_delays=(0.05,))
    try:
        with bus_running(bus):
            base = f"http://127.0.0.1:{port}"
            wait_listening(f"{base}/healthz")
            yield Hooks(base, bus, target, confirms, sender)
    finally:
        sender.close()
        bus.close()


@pytest.fixture
def shop() -> Iterator[tuple[ShopState, str]]:
    """The fake shop on a free loopback port: (its state, its base URL)."""
    state = ShopState(token=SECRETS["SHOP_TOKEN"])
    with AppServer(build_shop_app(state)) as server:
        yield state, server.url
