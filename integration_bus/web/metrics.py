"""``GET /metrics`` (Prometheus text format) on the bus's HTTP runner, for ``--metrics-port``."""

from __future__ import annotations

import threading
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, make_asgi_app

from integration_bus.http_limits import HttpLimits
from integration_bus.web.serve import HttpServer

__all__ = ["serve_metrics"]

_NOT_FOUND = {"type": "http.response.body", "body": b"not found\n"}


def serve_metrics(registry: CollectorRegistry, port: int, stop: threading.Event, *,
                  addr: str = "127.0.0.1", limits: HttpLimits | None = None) -> int:
    """Serve ``registry`` at ``/metrics`` on ``addr:port`` until ``stop``, in a daemon thread,
    with read deadlines and a connection limit. Binds before returning (a TransientError if it
    cannot) and returns the port."""
    metrics = make_asgi_app(registry)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/metrics":
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain")]})
            await send(_NOT_FOUND)
            return
        await metrics(scope, receive, send)

    server = HttpServer(app, host=addr, port=port, limits=limits or HttpLimits(), name="metrics",
                        log=structlog.get_logger("integration_bus.metrics"))
    bound = server.bind()
    threading.Thread(target=server.run, args=(stop,), name="metrics-http", daemon=True).start()
    return bound
