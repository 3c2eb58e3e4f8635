"""Serve an ASGI app on loopback in a background thread (the fake shop, benchmark baselines).

``with AppServer(app) as server: server.url`` — bound before ``__enter__`` returns (port 0
picks a free port), stopped and joined on exit.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

__all__ = ["AppServer"]


class AppServer:
    """One uvicorn server in a daemon thread. ``stop()`` is idempotent."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(1024)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                loop="asyncio", http="h11", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]},
                                        name=f"app-server:{self.port}", daemon=True)

    def start(self, timeout: float = 10.0) -> AppServer:
        self._thread.start()
        self._server_started(timeout)
        return self

    def _server_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._server.started:  # a condition with a deadline, polled
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
