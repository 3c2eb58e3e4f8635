"""``rest_shop``: web shops over REST — signed webhooks in, order polls in, pushes out.

Source (one of):

- ``webhooks``: a FastAPI receiver on uvicorn verifying Shopify / WooCommerce HMAC signatures
  (two secrets during a rotation), deduplicating by delivery id and business event id, and
  answering 2xx only after the broker confirmed and routed the envelope;
- ``poll``: orders updated since a cursor, Link-header or page-number pagination, staged with
  the cursor through the outbox.

Sink: inventory levels, fulfilments, order statuses — paced per shop (token bucket), 429
``Retry-After`` honoured and capped, 5xx backoff, ``Idempotency-Key`` on POST.

Registered by its factory :func:`make_plugin` (each bus builds its own plugin, with its own
pacers). The fake shop (``connectors.rest_shop.fakeshop``, ``bus sim shop``) is a simulator of
its own entry-point group, never imported by the connector. See docs/rest-shop.md.
"""

from __future__ import annotations

from connectors.rest_shop.config import (
    PollConfig,
    RestShopSinkConfig,
    RestShopSourceConfig,
    WebhookConfig,
)
from connectors.rest_shop.poller import OrdersPoller
from connectors.rest_shop.ratelimit import PacerPool
from connectors.rest_shop.sink import ShopSink
from connectors.rest_shop.source import WebhookSource
from integration_bus.connector import (
    ConnectorContext,
    ConnectorPlugin,
    PollingSource,
    Source,
)

__all__ = [
    "OrdersPoller",
    "RestShopSinkConfig",
    "RestShopSourceConfig",
    "ShopSink",
    "WebhookSource",
    "make_plugin",
]


class _Factory:
    """Builds sources and sinks; owns the per-shop pacers its sinks and polls share."""

    def __init__(self) -> None:
        self.pacers = PacerPool()

    def source(self, config: RestShopSourceConfig,
               context: ConnectorContext) -> Source | PollingSource:
        if isinstance(config.webhooks, WebhookConfig):
            return WebhookSource(config.webhooks, context)
        assert isinstance(config.poll, PollConfig)  # the model requires exactly one
        return OrdersPoller(config.poll, context, self.pacers)

    def sink(self, config: RestShopSinkConfig, context: ConnectorContext) -> ShopSink:
        return ShopSink(config, context, self.pacers)


def make_plugin() -> ConnectorPlugin:
    """A fresh ``rest_shop`` plugin with its own pacers: the entry point, called once per
    bus, so two buses in one process never share a pacer."""
    factory = _Factory()
    return ConnectorPlugin(
        name="rest_shop",
        summary="source: signed shop webhooks (Shopify, WooCommerce) or an order poll; "
                "sink: inventory levels, fulfilments, order statuses, rate-limited",
        source_config=RestShopSourceConfig, create_source=factory.source,
        sink_config=RestShopSinkConfig, create_sink=factory.sink)

