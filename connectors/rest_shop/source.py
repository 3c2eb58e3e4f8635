"""The webhook source: the receiver app on the bus's HTTP runner, inside the source thread of
``bus run`` / ``bus serve``, with its publishing bridge.

Lifecycle: ``run(publisher, stop)`` binds the listening socket (a bind failure is a
TransientError naming host:port, so the runtime retries with backoff), starts the bridge's
publishing thread, serves until ``stop`` is set under the configured ``http`` limits (read
deadlines, a connection limit, bounded error logs: ``integration_bus.http_server``), then stops
accepting, lets requests in flight finish and closes the bridge. The ``publisher`` the runtime
hands in is not used: the bridge thread opens its own (publishers are thread-confined).
"""

from __future__ import annotations

import threading

from connectors.rest_shop.bridge import PublishBridge
from connectors.rest_shop.config import WebhookConfig
from connectors.rest_shop.receiver import build_app
from integration_bus.connector import ConnectorContext, HttpServer, Publisher

__all__ = ["WebhookSource"]


class WebhookSource:
    """Receives signed shop webhooks on ``host:port`` (see ``receiver`` for the contract)."""

    def __init__(self, config: WebhookConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._config = config
        self._context = context
        #: the bound port once listening (useful with ``port: 0``)
        self.port: int | None = None
        self.listening = threading.Event()

    def run(self, publisher: Publisher, stop: threading.Event) -> None:
        config = self._config
        bridge = PublishBridge(self._context, window=config.window)
        server = HttpServer(build_app(config, bridge, self._context), host=config.host,
                            port=config.port, limits=config.http, name=f"webhooks:{self.name}",
                            log=self._context.log, field="webhooks.port")
        self.port = server.bind()
        bridge.start()
        self._context.log.info("webhooks.listening", host=config.host, port=self.port)
        self.listening.set()
        try:
            server.run(stop)
        finally:
            self.listening.clear()
            bridge.close()

    def close(self) -> None:
        """Everything is released when ``run`` returns."""
