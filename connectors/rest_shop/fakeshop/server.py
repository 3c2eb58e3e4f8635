"""Serve an ASGI app on loopback in a background thread (the fake shop, benchmark baselines),
on the bus's one HTTP runner.

``with AppServer(app) as server: server.url`` — bound before ``__enter__`` returns (port 0
picks a free port), stopped and joined on exit.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import structlog

from integration_bus.connector import HttpLimits, HttpServer

__all__ = ["AppServer"]


class AppServer:
    """One HTTP server in a daemon thread. ``stop()`` is idempotent."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = HttpServer(app, host=host, port=port,
                                  limits=HttpLimits(shutdown_grace=2000), name="fake-shop",
                                  log=structlog.get_logger("fakeshop"))
        self.host = host
        self.port = self._server.bind()
        self.url = f"http://{host}:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._server.run, args=(self._stop,),
                                        name=f"app-server:{self.port}", daemon=True)

    def start(self, timeout: float = 10.0) -> AppServer:
        self._thread.start()
        if not self._server.listening.wait(timeout):
            raise RuntimeError(f"the server on port {self.port} did not start")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._server.close()

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
