"""The fake shop as a simulator (entry point ``shop`` of ``integration_bus.simulators``):
``bus sim shop``, and for ``bus demo`` a shop that also sends the signed webhooks."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from connectors.rest_shop.fakeshop.api import build_shop_app
from connectors.rest_shop.fakeshop.cli import DEFAULT_TOKEN, shop_command
from connectors.rest_shop.fakeshop.sender import Subscription, WebhookSender
from connectors.rest_shop.fakeshop.server import AppServer
from connectors.rest_shop.fakeshop.state import SCENARIO_SKUS, ShopState
from integration_bus.connector import Simulator

__all__ = ["ScenarioShop", "simulator"]


class ScenarioShop:
    """The fake shop on a free loopback port (bound now, served from ``start()``), accepting
    the API token ``token`` (the one ``config/bus.yaml`` sends by default), with the reference
    scenario's SKUs and prices in ``skus``. ``send_webhook`` posts as Shopify does: signed,
    retried until a 2xx, over one connection pool that ``stop()`` closes."""

    def __init__(self) -> None:
        self.token = DEFAULT_TOKEN
        self.skus: dict[str, Decimal] = dict(SCENARIO_SKUS)
        self.state = ShopState(token=self.token)
        self._server = AppServer(build_shop_app(self.state))
        self.url = self._server.url
        self._lock = threading.Lock()
        self._sender: WebhookSender | None = None

    def start(self) -> ScenarioShop:
        self._server.start()
        return self

    def send_webhook(self, url: str, *, secret: bytes, topic: str, payload: dict[str, Any],
                     event_id: str) -> int | None:
        """POST ``payload`` as a Shopify webhook of ``topic`` signed with ``secret`` (retried
        until a 2xx); the status of the last attempt, None when the last got no answer."""
        with self._lock:
            if self._sender is None:
                self._sender = WebhookSender()
            sender = self._sender
        subscription = Subscription(url=url, platform="shopify", secret=secret, topic=topic)
        attempts = sender.send(sender.delivery(subscription, payload, event_id=event_id))
        return attempts[-1].status if attempts else None

    def stop(self) -> None:
        with self._lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.close()
        self._server.stop()


simulator = Simulator(
    name="shop", summary="a fake web shop (orders API, inventory, signed webhooks, rate "
                         "limits) for tests and the demo",
    command=shop_command, create=ScenarioShop)
