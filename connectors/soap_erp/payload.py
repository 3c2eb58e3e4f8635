"""Plain data helpers: zeep values to JSON-safe data, dotted paths, did-you-mean.

``to_plain`` turns what zeep returns (ordered dicts, lists, Decimal, date, datetime, bytes)
into what an envelope payload holds: dicts, lists, str, int, bool, None and Decimal (the
envelope encoder writes Decimals as strings; money is never a float).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

__all__ = ["get_path", "set_path", "to_plain"]


def to_plain(value: Any) -> Any:
    """A JSON-safe copy of ``value`` (Decimals kept, dates as ISO-8601 text)."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if value is None or isinstance(value, str | int | bool | Decimal):
        return value
    if isinstance(value, float):  # xsd:double / float: kept exact as its shortest text
        return Decimal(repr(value))
    return str(value)


def get_path(data: Any, path: str) -> Any:
    """``data['a']['b']`` for ``a.b``; None where a step is missing or not an object."""
    for part in path.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def set_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``value`` at ``path`` (objects on the way are copied or made).
    Raises ValueError naming the step when something on the way is not an object."""
    parts = path.split(".")
    out = dict(data)
    node = out
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, Mapping):
            raise ValueError(f"{'.'.join(parts[:i + 1])} is not an object")
        node[part] = dict(child)
        node = node[part]
    node[parts[-1]] = value
    return out
