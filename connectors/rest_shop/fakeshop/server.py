"""Serve an ASGI app on loopback in a background thread (the fake shop, benchmark baselines),
on the bus's one HTTP runner (the connector API's :class:`HttpServer`).

``with AppServer(app) as server: server.url`` — bound when constructed (port 0 picks a free
port), serving once ``start()``/``__enter__`` returns, stopped and joined by ``stop()``/exit.
"""

from __future__ import annotations

from starlette.types import ASGIApp

from integration_bus.connector import HttpLimits, HttpServer

__all__ = ["AppServer"]


class AppServer(HttpServer):
    """An :class:`HttpServer` for fakes: a short shutdown grace, bound at once."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(app, host=host, port=port, limits=HttpLimits(shutdown_grace=2000),
                         name="fake-shop")
        self.bind()
