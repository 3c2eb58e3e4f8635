"""When the broker cannot confirm, the receiver answers 503 within a second and keeps nothing."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from connectors.rest_shop.config import RestShopSourceConfig
from connectors.rest_shop.fakeshop import Subscription, WebhookSender
from connectors.rest_shop.source import WebhookSource
from integration_bus.transport.amqp import AmqpTransport
from tests.rest_shop.support import (
    SECRETS,
    bus_running,
    open_bus,
    wait_listening,
    webhooks_yaml,
    write_config,
)
from tests.support.probe import Target, wait_for
from tests.support.services import free_port


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a broker that hangs)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def _order(n: int) -> dict[str, object]:
    return {"id": n, "updated_at": "2024-03-01T10:00:00Z", "total_price": "1.00"}


def test_a_broker_that_never_answers_gets_503_within_a_second(tmp_path: Path,
                                                             black_hole: int) -> None:
    # Given a receiver whose publisher talks to a broker that accepts and then hangs
    port = free_port()
    bus = open_bus(write_config(tmp_path, "", sources=webhooks_yaml(port)), Target())
    hung = AmqpTransport(f"amqp://guest:guest@127.0.0.1:{black_hole}/", connect_timeout=3)
    context = bus.context("hooks")
    config = bus.config.sources["hooks"].config
    assert isinstance(config, RestShopSourceConfig) and config.webhooks is not None
    source = WebhookSource(config.webhooks, context)
    stop = threading.Event()
    runner = threading.Thread(target=source.run, args=(hung.publisher(), stop), daemon=True)
    runner.start()
    sender = WebhookSender()
    try:
        wait_listening(f"http://127.0.0.1:{port}/healthz")
        sub = Subscription(f"http://127.0.0.1:{port}/webhooks/acme", "shopify",
                           SECRETS["ACME_NEW"].encode())
        deliveries = [sender.delivery(sub, _order(i)) for i in range(16)]
        # When 16 deliveries arrive, 8 at a time
        with ThreadPoolExecutor(8) as pool:
            attempts = list(pool.map(sender.send_once, deliveries))
        # Then every one is answered 503 within a second, and none is remembered as taken
        assert {a.status for a in attempts} == {503}
        assert max(a.answered - a.started for a in attempts) < 1.0
        keys = [f"b:acme:orders/create:{hashlib.sha256(d.body).hexdigest()}"
                for d in deliveries]
        assert context.seen.seen(keys) == {}
    finally:
        stop.set()
        runner.join(40)
        sender.close()
        bus.close()
    assert not runner.is_alive()


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.mark.rabbitmq
def test_a_broker_that_refuses_gets_503_and_the_retry_is_taken_later(
        tmp_path: Path, rabbitmq_url: str) -> None:
    port = free_port()
    target = Target()
    bus = open_bus(write_config(tmp_path, rabbitmq_url, sources=webhooks_yaml(port)), target)
    vhost = urlsplit(rabbitmq_url).path.lstrip("/")
    sender = WebhookSender(retry_delays=(0.2, 0.4, 0.8, 1.6))
    sub = Subscription(f"http://127.0.0.1:{port}/webhooks/acme", "shopify",
                       SECRETS["ACME_NEW"].encode())
    try:
        with bus_running(bus):
            wait_listening(f"http://127.0.0.1:{port}/healthz")
            assert sender.send_once(sender.delivery(sub, _order(1))).status == 200
            # Given the broker stops taking our messages (permissions revoked, connections cut)
            _ctl("clear_permissions", "-p", vhost, "guest")
            _ctl("close_all_connections", "-p", vhost, "test: broker refuses")
            delivery = sender.delivery(sub, _order(2))
            # When a delivery arrives, it is answered 503 fast, never 2xx
            refused = [sender.send_once(delivery) for _ in range(3)]
            assert [a.status for a in refused] == [503, 503, 503]
            assert max(a.answered - a.started for a in refused) < 1.0
            # And once the broker takes messages again, the sender's retry (same delivery
            # id) is accepted — it was not remembered as taken when it was refused
            _ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
            attempts = sender.send(delivery)
            assert attempts[-1].status == 200
            assert attempts[-1].body["status"] == "accepted"
            wait_for(lambda: target.count() == 2, timeout=60, message="both orders delivered")
    finally:
        sender.close()
        bus.close()
    assert target.duplicates() == {}
