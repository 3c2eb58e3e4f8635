"""Webhook signatures: HMAC-SHA256 over the raw body, base64, as Shopify and WooCommerce send it.

Shopify puts it in ``X-Shopify-Hmac-Sha256``, WooCommerce in ``X-WC-Webhook-Signature``; both
sign the exact bytes of the body, so verification must run on the raw body before any parsing.
Every configured secret is tried (two during a rotation) and each comparison is constant-time
(``hmac.compare_digest``); all secrets are always compared, so the time taken does not tell
which one matched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PLATFORM_HEADERS", "PlatformHeaders", "sign", "verify"]


@dataclass(frozen=True)
class PlatformHeaders:
    """Header names one platform uses (all lower-case, as ASGI presents them)."""

    signature: str
    topic: str
    delivery_id: str
    event_id: str | None
    subscription: str | None


PLATFORM_HEADERS: Mapping[str, PlatformHeaders] = {
    "shopify": PlatformHeaders(signature="x-shopify-hmac-sha256", topic="x-shopify-topic",
                               delivery_id="x-shopify-webhook-id",
                               event_id="x-shopify-event-id", subscription=None),
    "woocommerce": PlatformHeaders(signature="x-wc-webhook-signature",
                                   topic="x-wc-webhook-topic",
                                   delivery_id="x-wc-webhook-delivery-id", event_id=None,
                                   subscription="x-wc-webhook-id"),
}


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value for ``body``: base64 of HMAC-SHA256(secret, body)."""
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode("ascii")


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
