"""Prometheus collectors of the order process manager, on the bus's own registry.

- ``bus_order_age_seconds{outcome}``: order aging — from the saga's start (the accepted web
  order) to its final state
- ``bus_orders_final_total{outcome}``: orders that reached a final state, by outcome
- ``bus_orders_waiting_total``: orders that went to a person (business dead letter)
"""

from __future__ import annotations

import threading
import weakref
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["OrderMetrics"]

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            14_400.0, 86_400.0)


class OrderMetrics:
    """One set per registry (every ``order_saga`` instance of a bus shares it)."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, OrderMetrics]] = (
        weakref.WeakKeyDictionary())
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.age = Histogram("bus_order_age_seconds", "Accepted order to final state",
                             ["outcome"], buckets=_BUCKETS, registry=registry)
        self.final = Counter("bus_orders_final", "Orders in a final state", ["outcome"],
                             registry=registry)
        self.waiting = Counter("bus_orders_waiting", "Orders sent to a person",
                               registry=registry)

    @classmethod
    def of(cls, registry: CollectorRegistry) -> OrderMetrics:
        with cls._lock:
            found = cls._by_registry.get(registry)
            if found is None:
                found = cls._by_registry[registry] = cls(registry)
            return found
