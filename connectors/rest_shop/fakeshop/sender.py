"""The fake shop's webhook sender: signs like Shopify or WooCommerce, retries like them.

A :class:`Delivery` is one delivery id of one event to one subscription (a retry keeps the
delivery id; two subscriptions of the same event get two delivery ids and one event id).
``send`` retries until a 2xx or ``max_attempts``; WooCommerce-style subscriptions are disabled
after ``disable_after`` failed deliveries in a row. Fault injection for tests: a wrong
signature (``tamper="bad_hmac"``), and a body cut short by a dropped connection
(``send_truncated``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson

from connectors.rest_shop.signatures import sign
from integration_bus.connector import HttpTimeouts, http_client

__all__ = ["Attempt", "Delivery", "Subscription", "WebhookSender"]


@dataclass
class Subscription:
    """Where one webhook subscription posts, and how it signs."""

    url: str
    platform: Literal["shopify", "woocommerce"]
    secret: bytes
    topic: str = "orders/create"
    id: int = 1
    failures: int = 0
    disabled: bool = False


@dataclass(frozen=True)
class Delivery:
    subscription: Subscription
    body: bytes
    delivery_id: str
    event_id: str | None


@dataclass(frozen=True)
class Attempt:
    """One POST: when it started and was answered (time.monotonic()), and the status (None if
    the connection ended without an answer)."""

    delivery_id: str
    started: float
    answered: float
    status: int | None
    body: dict[str, Any] = field(default_factory=dict)


class WebhookSender:
    """Sends deliveries; thread-safe (one pooled httpx client). ``close()`` when done."""

    def __init__(self, *, timeout: float = 10.0, retry_delays: Sequence[float] = (
            0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2), max_attempts: int = 8,
            disable_after: int = 5) -> None:
        wait = round(timeout * 1000)
        self._client = http_client(HttpTimeouts.from_millis(connect=wait, read=wait,
                                                            write=wait, pool=wait),
                                   max_connections=64)
        self._delays = list(retry_delays)
        self._max_attempts = max_attempts
        self._disable_after = disable_after
        self._lock = threading.Lock()

    def delivery(self, subscription: Subscription, payload: dict[str, Any], *,
                 event_id: str | None = None, delivery_id: str | None = None) -> Delivery:
        try:
            body = orjson.dumps(payload)
        except TypeError:  # integers beyond 64 bits: the standard library writes them exactly
            body = json.dumps(payload, separators=(",", ":")).encode()
        return Delivery(subscription, body, delivery_id or str(uuid.uuid4()), event_id)

    def headers(self, delivery: Delivery, *, signature: str | None = None) -> dict[str, str]:
        sub = delivery.subscription
        signature = signature or sign(sub.secret, delivery.body)
        if sub.platform == "shopify":
            headers = {"X-Shopify-Topic": sub.topic, "X-Shopify-Hmac-Sha256": signature,
                       "X-Shopify-Shop-Domain": "acme.myshopify.com",
                       "X-Shopify-Webhook-Id": delivery.delivery_id,
                       "X-Shopify-API-Version": "2024-01",
                       "X-Shopify-Triggered-At": datetime.now(UTC).isoformat()}
            if delivery.event_id:
                headers["X-Shopify-Event-Id"] = delivery.event_id
        else:
            resource, _, event = sub.topic.partition(".")
            headers = {"X-WC-Webhook-Source": "https://shop.example/",
                       "X-WC-Webhook-Topic": sub.topic, "X-WC-Webhook-Resource": resource,
                       "X-WC-Webhook-Event": event, "X-WC-Webhook-Signature": signature,
                       "X-WC-Webhook-ID": str(sub.id),
                       "X-WC-Webhook-Delivery-ID": delivery.delivery_id}
        return {**headers, "Content-Type": "application/json"}

    def send_once(self, delivery: Delivery,
                  tamper: Literal["bad_hmac"] | None = None) -> Attempt:
        signature = sign(b"not-the-secret", delivery.body) if tamper == "bad_hmac" else None
        headers = self.headers(delivery, signature=signature)
        started = time.monotonic()
        try:
            response = self._client.post(delivery.subscription.url, content=delivery.body,
                                         headers=headers)
        except httpx.TransportError:
            return Attempt(delivery.delivery_id, started, time.monotonic(), None)
        answered = time.monotonic()
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        return Attempt(delivery.delivery_id, started, answered, response.status_code,
                       body if isinstance(body, dict) else {})

    def send(self, delivery: Delivery) -> list[Attempt]:
        """Deliver with retries until a 2xx; every attempt, in order."""
        sub = delivery.subscription
        attempts: list[Attempt] = []
        while not sub.disabled and len(attempts) < self._max_attempts:
            if attempts:
                time.sleep(self._delays[min(len(attempts) - 1, len(self._delays) - 1)])
            attempt = self.send_once(delivery)
            attempts.append(attempt)
            ok = attempt.status is not None and 200 <= attempt.status < 300
            with self._lock:
                sub.failures = 0 if ok else sub.failures + 1
                if sub.platform == "woocommerce" and sub.failures >= self._disable_after:
                    sub.disabled = True  # WooCommerce gives up on a failing endpoint
            if ok:
                break
        return attempts

    def ping(self, subscription: Subscription) -> Attempt:
        """WooCommerce's creation ping: ``webhook_id=N``, form-encoded, unsigned."""
        started = time.monotonic()
        response = self._client.post(subscription.url, content=f"webhook_id={subscription.id}",
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "X-WC-Webhook-ID": str(subscription.id)})
        return Attempt("ping", started, time.monotonic(), response.status_code,
                       response.json() if response.content else {})

    def send_truncated(self, delivery: Delivery, timeout: float = 5.0) -> Attempt:
        """Announce the whole body, send half of it, and close the sending side: a connection
        dropped mid-body. The status is whatever came back (None: no answer)."""
        url = urlsplit(delivery.subscription.url)
        head = [f"POST {url.path} HTTP/1.1", f"Host: {url.netloc}",
                f"Content-Length: {len(delivery.body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in self.headers(delivery).items()]
        started = time.monotonic()
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80),
                                      timeout=timeout) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode()
                         + delivery.body[: len(delivery.body) // 2])
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            try:
                while chunk := sock.recv(4096):
                    reply += chunk
            except OSError:
                pass
        status = int(reply.split()[1]) if reply.startswith(b"HTTP/1.1 ") else None
        return Attempt(delivery.delivery_id, started, time.monotonic(), status)

    def close(self) -> None:
        self._client.close()
