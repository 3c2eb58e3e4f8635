"""Prometheus collectors of the ``rest_shop`` connector, registered on the bus's own registry.

- ``rest_shop_webhooks_total{source, shop, outcome}``: accepted, duplicate, dead_lettered,
  unauthorized, ping, too_large, bad_request, unavailable, truncated, unknown_shop
- ``rest_shop_webhook_answer_seconds{source}``: time from request start to answer
- ``rest_shop_requests_total{shop, action, outcome}``: sink and poll HTTP calls by outcome
  (ok, throttled, server_error, client_error, connection_error)
- ``rest_shop_throttle_wait_seconds{shop}``: time spent waiting for the token bucket or a
  Retry-After
"""

from __future__ import annotations

import threading
import weakref
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["RestShopMetrics"]

_ANSWER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RestShopMetrics:
    """One set of collectors per registry: every ``rest_shop`` instance of a bus shares it."""

    # Keyed weakly by the bus's registry: a cache of what was registered there, not shared
    # state between buses (each Bus has its own registry and so its own collectors).
    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, RestShopMetrics]] = (
        weakref.WeakKeyDictionary())
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.webhooks = Counter("rest_shop_webhooks", "Webhook deliveries by outcome",
                                ["source", "shop", "outcome"], registry=registry)
        self.answer = Histogram("rest_shop_webhook_answer_seconds",
                                "Webhook time to answer", ["source"],
                                buckets=_ANSWER_BUCKETS, registry=registry)
        self.requests = Counter("rest_shop_requests", "Shop API calls by outcome",
                                ["shop", "action", "outcome"], registry=registry)
        self.throttle_wait = Counter("rest_shop_throttle_wait_seconds",
                                     "Time waiting for the shop's rate limit", ["shop"],
                                     registry=registry)

    @classmethod
    def of(cls, registry: CollectorRegistry) -> RestShopMetrics:
        with cls._lock:
            found = cls._by_registry.get(registry)
            if found is None:
                found = cls._by_registry[registry] = cls(registry)
            return found
