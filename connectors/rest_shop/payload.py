"""Shop payloads: exact JSON parsing, message types from topics, business event identity.

Parsing keeps every number exact. orjson keeps integers exact up to 64 bits but silently turns
larger ones (and every fraction) into binary floats, so a document in which orjson produced any
float is parsed again with the standard library: fractions become ``Decimal`` (written on the
bus as decimal strings, so ``19.99`` stays ``"19.99"``) and integers beyond the 64-bit range
become decimal strings (the bus's wire encoding carries integers up to 64 bits); no number ever
passes through a binary float.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

from integration_bus.connector import PermanentError

__all__ = ["PayloadError", "event_id_of", "loads_exact", "message_type", "parse_exact"]

_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1

#: Shopify topics (``resource/verb``) whose event names are not the mechanical translation
_SHOPIFY_VERBS = {"create": "created", "update": "updated", "updated": "updated",
                  "delete": "deleted", "paid": "paid", "cancelled": "cancelled",
                  "fulfilled": "fulfilled", "partially_fulfilled": "partially_fulfilled",
                  "edited": "edited"}


class PayloadError(PermanentError):
    """A webhook body that is not the JSON object it claims to be (context: delivery id)."""


def _exact_int(text: str) -> int | str:
    value = int(text)
    return value if _INT64_MIN <= value <= _UINT64_MAX else text


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def parse_exact(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body`` with exact numbers; PayloadError if it is not one."""
    data = loads_exact(body)
    if not isinstance(data, dict):
        raise PayloadError("body is not a JSON object", field="body")
    return data


def loads_exact(body: bytes) -> Any:
    """Any JSON document in ``body`` with exact numbers; PayloadError if it is not JSON."""
    try:
        data = orjson.loads(body)
        if _has_float(data):
            data = json.loads(body, parse_float=Decimal, parse_int=_exact_int,
                              parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # orjson's and json's decode errors
        # the message names a position only: never the body, which may hold personal data
        raise PayloadError(f"body is not valid JSON: {_position(exc)}",
                           field="body") from None
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _position(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at char {exc.pos}"
    text = str(exc)
    return text.split(":", 1)[0] if ":" in text else type(exc).__name__


def message_type(prefix: str, platform: str, topic: str) -> str:
    """``shop.shopify.order_created`` from ``orders/create``; ``order.created`` (WooCommerce)
    becomes ``shop.woocommerce.order_created``."""
    topic = topic.strip().lower()
    if platform == "shopify" and "/" in topic:
        resource, _, verb = topic.partition("/")
        resource = resource[:-1] if resource.endswith("s") else resource
        name = f"{resource}_{_SHOPIFY_VERBS.get(verb, verb)}"
    else:
        name = topic.replace(".", "_")
    name = re.sub(r"[^a-z0-9_]+", "_", name).strip("_") or "unknown"
    return f"{prefix}.{platform}.{name}"


def event_id_of(platform: str, header_event_id: str | None, payload: dict[str, Any]) -> str:
    """The business event id: the platform's event id header when sent (Shopify's
    ``X-Shopify-Event-Id`` is the same for every subscription a merchant action fans out to),
    else the resource id and its modification time (WooCommerce)."""
    if header_event_id:
        return header_event_id.strip()
    resource_id = payload.get("id")
    stamp = (payload.get("date_modified_gmt") or payload.get("updated_at")
             or payload.get("date_modified") or "")
    if resource_id is None:
        raise PayloadError("the body has no 'id' to identify the event", field="id")
    return f"{resource_id}@{stamp}"
