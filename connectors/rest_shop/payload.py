"""Shop payloads: exact JSON parsing (with a nesting cap), message types from topics, the
identity and the time of what a signed body describes.

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
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from integration_bus.connector import PermanentError

__all__ = ["PayloadError", "body_identity", "body_time", "loads_exact", "message_type",
           "parse_exact"]

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


class _TooDeep(Exception):
    pass


def _has_float(value: Any, depth: int) -> bool:
    """Does ``value`` hold a float? Raises _TooDeep past ``depth`` levels of nesting."""
    if isinstance(value, float):
        return True
    if isinstance(value, dict | list):
        if depth <= 0:
            raise _TooDeep
        items = value.values() if isinstance(value, dict) else value
        found = False
        for item in items:  # every item: the depth of all of them is checked
            if isinstance(item, dict | list | float):
                found = _has_float(item, depth - 1) or found
        return found
    return False


def parse_exact(body: bytes, *, max_depth: int = 64) -> dict[str, Any]:
    """The JSON object in ``body`` with exact numbers; PayloadError if it is not one, or if it
    nests deeper than ``max_depth`` (such a document could not be carried on the bus: its
    encoder stops at a fixed depth)."""
    data = loads_exact(body, max_depth=max_depth)
    if not isinstance(data, dict):
        raise PayloadError("body is not a JSON object", field="body")
    return data


def loads_exact(body: bytes, *, max_depth: int = 64) -> Any:
    """Any JSON document in ``body`` with exact numbers; PayloadError if it is not JSON or
    nests deeper than ``max_depth``."""
    try:
        data = orjson.loads(body)
        try:
            floats = _has_float(data, max_depth)
        except _TooDeep:
            raise PayloadError(f"body nests deeper than {max_depth} levels",
                               field="body") from None
        if floats:
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


_ID_MAX = 100  # characters of a body's id in a key
_STAMP_FIELDS = ("updated_at", "date_modified_gmt", "date_modified", "created_at",
                 "date_created_gmt", "date_created")


def body_identity(payload: dict[str, Any]) -> str | None:
    """What the signed body says it is: its ``id`` and, if it has one, the time it describes
    (``123@2024-03-01T10:00:00Z``); None without an ``id``. PayloadError for an id that is not
    a short string or an integer."""
    resource_id = payload.get("id")
    if resource_id is None:
        return None
    if isinstance(resource_id, bool) or not isinstance(resource_id, int | str) or \
            not str(resource_id) or len(str(resource_id)) > _ID_MAX:
        raise PayloadError(f"the body's 'id' is not a string or integer of 1 to {_ID_MAX} "
                           "characters", field="id")
    stamp = next((payload[f] for f in _STAMP_FIELDS if isinstance(payload.get(f), str)), "")
    return f"{resource_id}@{stamp[:40]}" if stamp else str(resource_id)


def body_time(payload: dict[str, Any]) -> datetime | None:
    """The newest time the signed body states about itself (``updated_at``, WooCommerce's
    ``date_modified_gmt``, ``created_at``, ...), as an aware datetime (no offset: UTC, as
    WooCommerce's ``*_gmt`` fields are); None if it states none that can be read."""
    newest: datetime | None = None
    for name in _STAMP_FIELDS:
        value = payload.get(name)
        if not isinstance(value, str) or len(value) > 40:
            continue
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        newest = moment if newest is None or moment > newest else newest
    return newest
