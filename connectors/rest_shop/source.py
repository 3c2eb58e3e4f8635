"""The webhook source: the receiver app on uvicorn, inside the source thread of ``bus run`` /
``bus serve``, with its publishing bridge.

Lifecycle: ``run(publisher, stop)`` binds the listening socket (a bind failure is a
TransientError naming host:port, so the runtime retries with backoff), starts the bridge's
publishing thread, serves until ``stop`` is set, then stops accepting, lets requests in flight
finish (uvicorn's graceful shutdown) and closes the bridge. The ``publisher`` the runtime hands
in is not used: the bridge thread opens its own (publishers are thread-confined).
"""

from __future__ import annotations

import socket
import threading

import uvicorn

from connectors.rest_shop.bridge import PublishBridge
from connectors.rest_shop.config import WebhookConfig
from connectors.rest_shop.receiver import build_app
from integration_bus.connector import ConnectorContext, Publisher, TransientError

__all__ = ["WebhookSource"]


class _Server(uvicorn.Server):
    """uvicorn that also stops when the bus's ``stop`` event is set."""

    def __init__(self, config: uvicorn.Config, stop: threading.Event) -> None:
        super().__init__(config)
        self._stop = stop

    async def on_tick(self, counter: int) -> bool:
        if self._stop.is_set():
            return True
        return await super().on_tick(counter)


class WebhookSource:
    """Receives signed shop webhooks on ``host:port`` (see ``receiver`` for the contract)."""

    def __init__(self, config: WebhookConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._config = config
        self._context = context
        #: the bound port once listening (useful with ``port: 0``)
        self.port: int | None = None
        self.listening = threading.Event()

    def _bind(self) -> socket.socket:
        host, port = self._config.host, self._config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP
        # (without it every answer waits ~40 ms for a delayed ACK)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise TransientError(f"cannot listen on {host}:{port}: {exc.strerror}",
                                 field="webhooks.port") from exc
        sock.listen(1024)
        sock.set_inheritable(True)
        self.port = int(sock.getsockname()[1])
        return sock

    def run(self, publisher: Publisher, stop: threading.Event) -> None:
        sock = self._bind()
        bridge = PublishBridge(self._context, window=self._config.window)
        bridge.start()
        config = uvicorn.Config(build_app(self._config, bridge, self._context),
                                log_config=None, access_log=False, lifespan="off",
                                loop="asyncio", http="h11", timeout_graceful_shutdown=5,
                                server_header=False)
        server = _Server(config, stop)
        self._context.log.info("webhooks.listening", host=self._config.host, port=self.port,
                               shops=sorted(self._config.shops))
        self.listening.set()
        try:
            server.run(sockets=[sock])
        finally:
            self.listening.clear()
            sock.close()
            bridge.close()

    def close(self) -> None:
        """Everything is released when ``run`` returns."""
