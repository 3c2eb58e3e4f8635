"""Webhook signatures and headers: HMAC-SHA256 over the raw body, base64, as Shopify and
WooCommerce send it, and every spelling of their headers.

Both platforms sign the exact bytes of the body, so verification runs on the raw body before any
parsing. Every configured secret is tried (two during a rotation) and each comparison is
constant-time (``hmac.compare_digest``); all secrets are always compared, so the time taken does
not tell which one matched.

Header names are read as each platform documents them, in any letter case and with or without
the ``X-`` prefix: Shopify's ``X-Shopify-Hmac-Sha256`` and its newer ``shopify-hmac-sha256``
(events webhooks, current SDKs, some proxies), WooCommerce's ``X-WC-Webhook-Signature``. A
header sent twice (or in both spellings) with different values is a conflict, answered 400:
a real platform never does that, and a receiver must not pick one at random. For the signature
every value sent is checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["PLATFORM_HEADERS", "HeaderConflict", "PlatformHeaders", "read_header",
           "read_signatures", "sign", "verify", "verify_any"]


@dataclass(frozen=True)
class PlatformHeaders:
    """Header names one platform documents, lower-case and without the ``X-`` prefix (each is
    read with or without it). WooCommerce also sends the topic's two halves (``resource``,
    ``event``), used when the topic header is missing."""

    signature: str
    topic: str
    delivery_id: str
    event_id: str | None
    subscription: str | None
    resource: str | None = None
    event: str | None = None


PLATFORM_HEADERS: Mapping[str, PlatformHeaders] = {
    # shopify.dev "Webhooks delivery structure": X-Shopify-Topic, -Hmac-Sha256, -Shop-Domain,
    # -API-Version, -Webhook-Id (per delivery), -Triggered-At, -Event-Id (per merchant action),
    # -Name; events webhooks send them lower-case without X- (shopify-hmac-sha256, ...)
    "shopify": PlatformHeaders(signature="shopify-hmac-sha256", topic="shopify-topic",
                               delivery_id="shopify-webhook-id", event_id="shopify-event-id",
                               subscription=None),
    # WooCommerce (WC_Webhook::deliver): X-WC-Webhook-Source, -Topic, -Resource, -Event,
    # -Signature, -ID (the subscription), -Delivery-ID
    "woocommerce": PlatformHeaders(signature="wc-webhook-signature", topic="wc-webhook-topic",
                                   delivery_id="wc-webhook-delivery-id", event_id=None,
                                   subscription="wc-webhook-id", resource="wc-webhook-resource",
                                   event="wc-webhook-event"),
}


class Headers(Protocol):
    """Case-insensitive request headers (Starlette's ``Headers``)."""

    def getlist(self, key: str) -> list[str]: ...


class HeaderConflict(ValueError):
    """One header sent with different values (twice, or in both spellings)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"header {name} (or X-{name}) was sent with different values")
        self.name = name


def _values(headers: Headers, name: str) -> list[str]:
    return [v.strip() for n in (name, f"x-{name}") for v in headers.getlist(n)]


def read_header(headers: Headers, name: str | None) -> str | None:
    """The value of header ``name`` in any of its spellings; HeaderConflict if they differ."""
    if name is None:
        return None
    values = set(_values(headers, name))
    if len(values) > 1:
        raise HeaderConflict(name)
    return values.pop() if values else None


def read_signatures(headers: Headers, name: str) -> list[str]:
    """Every signature value sent, in any spelling (each is checked)."""
    return _values(headers, name)


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value for ``body``: base64 of HMAC-SHA256(secret, body)."""
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode("ascii")


def verify_any(secrets: Sequence[bytes], body: bytes, signatures: Sequence[str]) -> bool:
    """True if any of ``signatures`` is the signature of ``body`` under any of ``secrets``."""
    matched = False
    for signature in signatures:
        matched |= verify(secrets, body, signature)
    return matched


def verify(secrets: Sequence[bytes], body: bytes, signature: str | None) -> bool:
    """True if ``signature`` is the signature of ``body`` under any of ``secrets``."""
    if not signature:
        return False
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except ValueError:
        return False
    matched = False
    for secret in secrets:
        expected = hmac.new(secret, body, hashlib.sha256).digest()
        matched |= hmac.compare_digest(expected, given)
    return matched
