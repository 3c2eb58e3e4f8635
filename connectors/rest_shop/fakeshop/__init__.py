"""A fake web shop over real HTTP, for tests and the demo (``bus sim shop``).

``ShopState`` holds orders, inventory, fulfilments and every request; ``build_shop_app`` serves
it (orders with Link-header and page-number pagination, inventory compare-and-set, fulfilments,
order status, 429/503 injection); ``WebhookSender`` signs and retries like Shopify and
WooCommerce; ``AppServer`` runs an app on loopback in a thread.
"""

from __future__ import annotations

from connectors.rest_shop.fakeshop.api import build_shop_app
from connectors.rest_shop.fakeshop.sender import Attempt, Delivery, Subscription, WebhookSender
from connectors.rest_shop.fakeshop.server import AppServer
from connectors.rest_shop.fakeshop.state import Order, RequestRecord, ShopState

__all__ = ["AppServer", "Attempt", "Delivery", "Order", "RequestRecord", "ShopState",
           "Subscription", "WebhookSender", "build_shop_app"]
