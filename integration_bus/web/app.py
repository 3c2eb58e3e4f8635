"""``GET /availability?sku=&location=`` and ``GET /health``, served by ``bus run`` on the bus's
HTTP runner (:mod:`integration_bus.http_server`: read deadlines, a connection limit, no OpenAPI
schema or docs unless ``availability.http.docs``).

Answers come from a cache whose staleness is bounded and stated: an entry is read from the store
again once it is older than ``max_staleness``, and every answer says when it was read (``as_of``)
and the bound (``max_staleness_ms``), so a caller knows how old "available" can be. An outage
of the store is a 503 that says no more than that (the reason is logged, never answered).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from fastapi import FastAPI, HTTPException, Query

from integration_bus.errors import StoreUnavailable
from integration_bus.http_limits import HttpLimits
from integration_bus.http_server import HttpServer, api
from integration_bus.retail.projection import Stock, StockProjection
from integration_bus.runtime import Bus

__all__ = ["AvailabilityCache", "availability_service", "make_app", "serve"]


class AvailabilityCache:
    """At most ``size`` entries, each at most ``max_staleness_ms`` old when served."""

    def __init__(self, projection: StockProjection, max_staleness_ms: int,
                 size: int = 10_000) -> None:
        self.projection = projection
        self.max_staleness = max_staleness_ms / 1000
        self.size = size
        self._entries: OrderedDict[tuple[str, str], tuple[float, datetime, Stock | None]] = \
            OrderedDict()
        self._lock = threading.Lock()

    def get(self, sku: str, location: str) -> tuple[Stock | None, datetime]:
        key = (sku, location)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now - entry[0] <= self.max_staleness:
                self._entries.move_to_end(key)
                return entry[2], entry[1]
        stock = self.projection.get(sku, location)
        read_at = datetime.now(UTC)
        with self._lock:
            self._entries[key] = (now, read_at, stock)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return stock, read_at


log = structlog.get_logger("integration_bus.web")


def make_app(projection: StockProjection, *, max_staleness_ms: int,
             limits: HttpLimits | None = None) -> FastAPI:
    app = api(limits, title="integration-bus")
    cache = AvailabilityCache(projection, max_staleness_ms)

    @app.get("/availability")
    def availability(sku: str = Query(min_length=1, max_length=128),
                     location: str = Query(min_length=1, max_length=128)) -> dict[str, object]:
        try:
            stock, as_of = cache.get(sku, location)
        except StoreUnavailable as exc:
            log.warning("availability.store_unavailable", error=str(exc))
            raise HTTPException(503, "store unavailable") from exc
        if stock is None:
            raise HTTPException(404, f"no stock known for sku {sku!r} at {location!r}")
        return {**stock.to_dict(), "as_of": as_of.isoformat(),
                "max_staleness_ms": int(cache.max_staleness * 1000)}

    @app.get("/health")
    def health() -> dict[str, str]:
        try:
            projection.store.ping()
        except StoreUnavailable as exc:
            log.warning("health.store_unavailable", error=str(exc))
            raise HTTPException(503, "unavailable") from exc
        return {"status": "ok"}

    return app


def serve(app: FastAPI, port: int, stop: threading.Event, host: str = "127.0.0.1",
          limits: HttpLimits | None = None) -> None:
    """Run the app until ``stop`` is set (call from a thread)."""
    HttpServer(app, host=host, port=port, limits=limits or HttpLimits(), name="availability",
               log=log, field="availability.http_port").run(stop)


def availability_service(bus: Bus) -> dict[str, Callable[[threading.Event], None]]:
    """What ``bus run`` hands :meth:`Bus.run <integration_bus.runtime.Bus.run>` as its
    ``services``: ``{"http": ...}`` serving this API on ``availability.http_port``, or nothing
    when bus.yaml sets no port."""
    settings = bus.config.settings.availability
    if settings.http_port is None:
        return {}
    app = make_app(bus.stock, max_staleness_ms=settings.max_staleness, limits=settings.http)
    return {"http": functools.partial(serve, app, settings.http_port, limits=settings.http)}
