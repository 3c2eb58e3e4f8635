"""A webhook receiver whose start fails (here: it came up, but after the start's deadline) is
stopped by the source, so the port is free for the source's restart instead of held for good by
a server no one reads from."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from connectors.rest_shop.config import RestShopSourceConfig
from connectors.rest_shop.source import WebhookSource
from integration_bus.errors import TransientError
from integration_bus.http_server import HttpServer
from tests.rest_shop.support import open_bus, webhooks_yaml, write_config
from tests.support.probe import Target
from tests.support.services import free_port


def test_a_receiver_that_started_too_late_is_stopped_and_the_port_freed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    bus = open_bus(write_config(tmp_path, "", sources=webhooks_yaml(port)), Target())
    config = bus.config.sources["hooks"].config
    assert isinstance(config, RestShopSourceConfig) and config.webhooks is not None
    started = HttpServer.start

    def late(self: HttpServer, *args: object, **kwargs: object) -> HttpServer:
        started(self, *args, **kwargs)  # it does come up ...
        raise TransientError(f"the {self.name} server on {self.url} did not start")  # ... late

    stop = threading.Event()
    try:
        first = WebhookSource(config.webhooks, bus.context("hooks"))
        with monkeypatch.context() as patch:
            patch.setattr(HttpServer, "start", late)
            with pytest.raises(TransientError, match="did not start"):
                first.read(stop)
        first.close()  # what the runtime does on the way out of a crashed source
        with socket.create_server(("127.0.0.1", port)):  # the port is free again
            pass
        second = WebhookSource(config.webhooks, bus.context("hooks"))  # the restart
        try:
            second.read(stop)
            assert second.listening.is_set() and second.port == port
        finally:
            second.close()
    finally:
        stop.set()
        bus.close()
