"""The webhook source: the receiver app on the bus's HTTP runner, and the batches the runtime
publishes (a push source on the ``BatchSource`` contract: ``integration_bus.source_batch``).

Lifecycle: the first ``read(stop)`` binds the listening socket (a bind failure is a
TransientError naming host:port, so the runtime retries with backoff) and starts serving in a
thread of its own under the configured ``http`` limits (read deadlines, a connection limit,
bounded error logs: ``integration_bus.http_server``). Each request waits in the source's inbox;
``read`` takes what is waiting as a batch, the runtime publishes it with confirms and only then
calls the batch's ack, which answers each request (``bridge``). ``close()`` answers what still
waits with 503, stops accepting, lets requests in flight finish and releases the socket;
``run(publisher, stop)`` is the runtime's loop for callers that run a source themselves, and
closes the receiver when it returns.
"""

from __future__ import annotations

import threading

from connectors.rest_shop.bridge import RequestBatches
from connectors.rest_shop.config import WebhookConfig
from connectors.rest_shop.receiver import build_app
from integration_bus.connector import (
    ConnectorContext,
    HttpServer,
    Publisher,
    SourceBatch,
    run_batch_source,
)

__all__ = ["WebhookSource"]


class WebhookSource:
    """Receives signed shop webhooks on ``host:port`` (see ``receiver`` for the contract)."""

    def __init__(self, config: WebhookConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._config = config
        self._context = context
        self._batches = RequestBatches(context, window=config.window)
        self._server: HttpServer | None = None
        #: the bound port once listening (useful with ``port: 0``)
        self.port: int | None = None
        self.listening = threading.Event()

    def read(self, stop: threading.Event) -> SourceBatch:
        """The requests waiting now (a ``BatchSource``); starts the receiver on first use."""
        if self._server is None:
            self._listen()
        return self._batches.read(stop)

    def run(self, publisher: Publisher, stop: threading.Event) -> None:
        """The ``Source`` contract: the runtime's read, publish, then ack loop until ``stop``;
        the receiver is closed when it returns."""
        try:
            run_batch_source(self, publisher, stop)
        finally:
            self.close()

    def _listen(self) -> None:
        config = self._config
        server = HttpServer(build_app(config, self._batches, self._context), host=config.host,
                            port=config.port, limits=config.http, name=f"webhooks:{self.name}",
                            log=self._context.log, field="webhooks.port")
        # Held before it starts, so close() stops it whatever happens next: a start that times
        # out (a loaded machine) leaves a thread that may still come up and hold the port, and
        # every restart of this source would then find the port taken.
        self._server = server
        try:
            self.port = server.bind()
            server.start()
        except BaseException:
            self._server = None
            server.stop()
            raise
        self._context.log.info("webhooks.listening", host=config.host, port=self.port)
        self.listening.set()

    def close(self) -> None:
        """Answer waiting requests 503, stop serving (requests in flight get the ``http``
        limits' shutdown grace) and release the socket. Idempotent."""
        self.listening.clear()
        self._batches.close()
        server, self._server = self._server, None
        if server is not None:
            server.stop()
