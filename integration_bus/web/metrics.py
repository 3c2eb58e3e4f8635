"""The watching face of every process that runs routes or sources, on the bus's HTTP runner
(``--metrics-host``/``--metrics-port``, or ``metrics:`` in bus.yaml):

- ``GET /metrics``: Prometheus text format (OpenMetrics when asked for);
- ``GET /health``: 200 while the process serves at all (liveness);
- ``GET /ready``: 200 when the broker and the store answer and every part the process runs
  is running; 503 otherwise, with a JSON body naming what is not ready (readiness).

Handlers run in the server's thread pool: a scrape or a readiness check that waits on the
broker or the store never holds up ``/health``.
"""

from __future__ import annotations

import threading

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from integration_bus.http_limits import HttpLimits
from integration_bus.http_server import HttpServer, api
from integration_bus.watch import Readiness

__all__ = ["serve_metrics", "watch_app"]

DEFAULT_HOST = "127.0.0.1"


def watch_app(registry: CollectorRegistry, readiness: Readiness | None = None, *,
              limits: HttpLimits | None = None) -> FastAPI:
    """``/metrics``, ``/health`` and (with ``readiness``) ``/ready``."""
    app = api(limits, title="integration-bus")

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), media_type=content_type)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "alive"}

    if readiness is not None:
        @app.get("/ready")
        def ready() -> JSONResponse:
            ok, checks = readiness.check()
            return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    return app


def serve_metrics(registry: CollectorRegistry, port: int, stop: threading.Event, *,
                  addr: str = DEFAULT_HOST, limits: HttpLimits | None = None,
                  readiness: Readiness | None = None) -> int:
    """Serve :func:`watch_app` on ``addr:port`` until ``stop``, in a daemon thread, with read
    deadlines and a connection limit. Binds before returning (a TransientError naming the
    address if it cannot) and returns the port (``port`` 0: a free one)."""
    limits = limits or HttpLimits()
    server = HttpServer(watch_app(registry, readiness, limits=limits), host=addr, port=port,
                        limits=limits, name="metrics", field="metrics.port",
                        log=structlog.get_logger("integration_bus.metrics"))
    server.start(stop)
    assert server.port is not None  # bound by start()
    return server.port
