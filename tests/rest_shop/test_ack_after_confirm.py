"""The webhook source on the runtime's read, publish, then ack loop, on real RabbitMQ: a webhook
is answered 2xx only after the broker confirmed it; one the broker refuses (nacked) is answered
503 and not remembered, and its retry is taken once the broker takes messages again; one that
can never travel is dead-lettered with where it came from."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from connectors.rest_shop.fakeshop import Subscription, WebhookSender
from tests.rest_shop.support import (
    SECRETS,
    bus_running,
    open_bus,
    record_confirms,
    wait_listening,
    webhooks_yaml,
    write_config,
)
from tests.support.probe import Target, wait_for
from tests.support.services import free_port

pytestmark = pytest.mark.rabbitmq


def _ctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def _route_policies(vhost: str) -> set[str]:
    """The policy in force on each route queue of ``vhost``."""
    rows = _ctl("list_queues", "-p", vhost, "--no-table-headers", "name", "policy")
    return {[*line.split("\t"), ""][1].strip() for line in rows.splitlines()
            if line.startswith("bus.route.")}


def _order(n: int) -> dict[str, object]:
    return {"id": n, "updated_at": "2024-03-01T10:00:00Z", "total_price": "1.00"}


def test_a_webhook_the_broker_refuses_is_answered_503_and_taken_on_its_retry(
        tmp_path: Path, rabbitmq_url: str) -> None:
    port = free_port()
    target = Target()
    bus = open_bus(write_config(tmp_path, rabbitmq_url, sources=webhooks_yaml(port)), target)
    confirms = record_confirms(bus)
    vhost = urlsplit(rabbitmq_url).path.lstrip("/")
    sender = WebhookSender(retry_delays=(0.2, 0.4, 0.8, 1.6, 3.2))
    sub = Subscription(f"http://127.0.0.1:{port}/webhooks/acme", "shopify",
                       SECRETS["ACME_NEW"].encode())
    try:
        with bus_running(bus, workers=0):  # no worker: what is queued stays there
            wait_listening(f"http://127.0.0.1:{port}/healthz")
            # Given a route queue that holds one message and refuses more (the broker nacks)
            _ctl("set_policy", "-p", vhost, "--apply-to", "queues", "full", r"^bus\.route\.",
                 '{"max-length": 1, "overflow": "reject-publish"}')
            wait_for(lambda: _route_policies(vhost) == {"full"}, timeout=30,
                     message="the policy in force on the route queue")
            # When deliveries arrive until one finds it full (a quorum queue enforces its
            # limit once it is reached, so it may take one message over the limit first)
            taken: list[int] = []
            for n in range(40, 45):
                delivery = sender.delivery(sub, _order(n))
                refused = sender.send_once(delivery)
                if refused.status != 200:
                    break
                taken.append(n)
            # Then that one is answered 503 (not acknowledged): not confirmed, not remembered
            assert refused.status == 503 and taken, (taken, refused.body)
            key = f"b:acme:orders/create:{hashlib.sha256(delivery.body).hexdigest()}"
            assert bus.context("hooks").seen.seen([key]) == {}
            assert [e.payload["id"] for e in confirms.published] == taken
            assert bus.store.dead_letters() == []
        # When a worker makes room in the queue, the shop's retry is accepted
        with bus_running(bus):
            wait_listening(f"http://127.0.0.1:{port}/healthz")
            attempts = sender.send(delivery)
            assert (attempts[-1].status, attempts[-1].body["status"]) == (200, "accepted")
            # and its 2xx came after its confirm
            assert [e.payload["id"] for e in confirms.published] == [*taken, n]
            confirmed = confirms.confirmed[confirms.published[-1].idempotency_key]
            assert refused.answered < confirmed < attempts[-1].answered
            wait_for(lambda: target.count() == len(taken) + 1, timeout=60,
                     message="every order delivered")
    finally:
        sender.close()
        bus.close()


def test_a_webhook_too_big_to_travel_is_dead_lettered_with_its_source(
        tmp_path: Path, rabbitmq_url: str) -> None:
    # Given a broker whose largest message is 4 KB and a receiver that takes 64 KB bodies
    port = free_port()
    target = Target()
    config_dir = write_config(tmp_path, rabbitmq_url, sources=webhooks_yaml(port))
    text = (config_dir / "bus.yaml").read_text()
    (config_dir / "bus.yaml").write_text(text.replace("retry_tiers:", "max_message: 4096, "
                                                                      "retry_tiers:", 1))
    bus = open_bus(config_dir, target)
    confirms = record_confirms(bus)
    sender = WebhookSender()
    sub = Subscription(f"http://127.0.0.1:{port}/webhooks/acme", "shopify",
                       SECRETS["ACME_NEW"].encode())
    try:
        with bus_running(bus):
            wait_listening(f"http://127.0.0.1:{port}/healthz")
            big = sender.delivery(sub, {**_order(42), "note": "x" * 8000})
            small = sender.delivery(sub, _order(43))
            # When an order too big to travel and a small one arrive
            answers = [sender.send_once(big), sender.send_once(small)]
            # Then the big one is answered for good (dead-lettered), the small one accepted
            assert [(a.status, a.body["status"]) for a in answers] == [
                (200, "dead_lettered"), (200, "accepted")]
            # and sent again the big one is a duplicate of that settlement, never a 503
            assert sender.send_once(big).body["status"] == "duplicate"
            wait_for(lambda: target.count() == 1, timeout=60, message="the small order")
            # and its dead letter says where it came from: shop, delivery, topic, body digest
            (letter,) = bus.store.dead_letters()
            assert letter["error_type"] == "UnpublishableError"
            assert letter["source_ref"]["delivery_id"] == big.delivery_id
            assert letter["source_ref"]["shop"] == "acme"
            assert letter["source_ref"]["topic"] == "orders/create"
            assert letter["source_ref"]["body_sha256"] == hashlib.sha256(big.body).hexdigest()
            assert [e.payload["id"] for e in confirms.published] == [43]
    finally:
        sender.close()
        bus.close()
