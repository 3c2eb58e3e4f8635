"""``rest_shop``: web shops over REST — signed webhooks in, order polls in, pushes out.

Source (one of):

- ``webhooks``: a FastAPI receiver on uvicorn verifying Shopify / WooCommerce HMAC signatures
  (two secrets during a rotation), deduplicating by delivery id and business event id, and
  answering 2xx only after the broker confirmed and routed the envelope;
- ``poll``: orders updated since a cursor, Link-header or page-number pagination, staged with
  the cursor through the outbox.

Sink: inventory levels, fulfilments, order statuses — paced per shop (token bucket), 429
``Retry-After`` honoured and capped, 5xx backoff, ``Idempotency-Key`` on POST.

Two plugin objects: ``plugin`` (``rest_shop``, the connector) and ``sim_plugin`` (``shop``,
only a simulator: ``bus sim shop`` runs the fake shop). See docs/rest-shop.md.
"""

from __future__ import annotations

from connectors.rest_shop.config import (
    PollConfig,
    RestShopSinkConfig,
    RestShopSourceConfig,
    WebhookConfig,
)
from connectors.rest_shop.fakeshop.cli import shop_command
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
    "plugin",
    "sim_plugin",
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
    """A fresh ``rest_shop`` plugin (its own pacers): tests and embedders build their own."""
    factory = _Factory()
    return ConnectorPlugin(
        name="rest_shop",
        summary="source: signed shop webhooks (Shopify, WooCommerce) or an order poll; "
                "sink: inventory levels, fulfilments, order statuses, rate-limited",
        source_config=RestShopSourceConfig, create_source=factory.source,
        sink_config=RestShopSinkConfig, create_sink=factory.sink)


plugin = make_plugin()

sim_plugin = ConnectorPlugin(
    name="shop", summary="simulator only: a fake web shop (orders API, inventory, signed "
                         "webhooks, rate limits) for tests and the demo",
    simulator=shop_command)
