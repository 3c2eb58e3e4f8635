"""Durations in configs: "250ms", "5s", "2m", "1h", "30d" or seconds, held as milliseconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

__all__ = ["Millis", "parse_millis"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def parse_millis(value: Any) -> int:
    """'250ms', '5s', '2m', '1h', '30d' or a number of seconds → whole milliseconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '250ms', '5s', '2m'")
    if isinstance(value, int | float):
        return round(value * 1000)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return round(float(match.group(1)) * _UNIT_MS[match.group(2)])
    raise ValueError(f"not a duration: {value!r} (use e.g. '250ms', '5s', '2m', '1h', '30d')")


#: A duration field in a config model, held as whole milliseconds.
Millis = Annotated[int, BeforeValidator(parse_millis), Field(ge=0), WithJsonSchema({
    "anyOf": [{"type": "number", "minimum": 0},
              {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"}],
    "description": "a duration: seconds, or a string like '250ms', '5s', '2m', '1h', '30d'"})]
