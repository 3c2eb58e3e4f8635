"""Turning computed values into JSON values, as the output schema says.

Inside a mapping numbers are ``Decimal`` and dates are ``date``/``datetime``. A document leaving a
mapping (or entering a ``validate`` step) is *conformed*: where the schema says ``string`` a Decimal
becomes its plain decimal text (``"59.97"``), where it says ``integer`` a whole Decimal becomes an
``int``, where it says ``number`` it stays an exact ``Decimal``; dates become ISO 8601 text.
Without schema information the bus default applies: decimals as text. Floats never survive: one
arriving from input is converted through its shortest repr.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

__all__ = ["Conformer", "conformer_for", "decimal_text", "plain_json"]

Conformer = Callable[[Any], Any]
_MAX_DEPTH = 24


def decimal_text(number: Decimal) -> str:
    """Plain decimal notation, no exponent, no negative zero: ``Decimal('1E+2')`` -> ``"100"``."""
    if number == 0 and number.is_signed():
        number = number.copy_abs()
    return f"{number:f}"


def plain_json(value: Any) -> Any:
    """The bus default: Decimals and floats as decimal text, dates as ISO text (new containers)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {k: plain_json(v) for k, v in value.items()}
    if kind is list:
        return [plain_json(v) for v in value]
    return _scalar(value, "string")


def _scalar(value: Any, want: str) -> Any:
    kind = type(value)
    if kind is float:
        value = Decimal(repr(value))
        kind = Decimal
    if kind is Decimal:
        if not value.is_finite():
            return str(value)  # validation reports it; never produced by the language itself
        if want == "integer" and value == value.to_integral_value() and value.adjusted() < 30:
            return int(value)
        if want == "number":
            return int(value) if value == value.to_integral_value() and value.adjusted() < 30 \
                and value.as_tuple().exponent == 0 else value
        return decimal_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return plain_json(value)
    return value


def conformer_for(schema: Any, root: Any | None = None, depth: int = 0) -> Conformer:
    """A function conforming values to ``schema`` (local ``$ref``s followed)."""
    root = schema if root is None else root
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return plain_json
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        return conformer_for(_resolve(root, ref), root, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list):
            typed = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            if len(typed) == 1:
                return conformer_for(typed[0], root, depth + 1)
            return plain_json
    types = schema.get("type")
    type_set = {types} if isinstance(types, str) else set(types or [])
    type_set.discard("null")
    if "properties" in schema or type_set == {"object"}:
        return _object_conformer(schema, root, depth)
    if type_set == {"array"}:
        item = conformer_for(schema.get("items"), root, depth + 1)
        return lambda value: [item(v) for v in value] if type(value) is list else _scalar(value, "")
    want = "string"
    if "string" not in type_set:
        want = "number" if "number" in type_set else ("integer" if "integer" in type_set else want)
    return lambda value: _scalar(value, want) if type(value) is not str else value


def _object_conformer(schema: Mapping[str, Any], root: Any, depth: int) -> Conformer:
    props = schema.get("properties") or {}
    fields = {str(k): conformer_for(v, root, depth + 1) for k, v in props.items()}
    extra_schema = schema.get("additionalProperties")
    extra = conformer_for(extra_schema, root, depth + 1) if isinstance(extra_schema, Mapping) \
        else plain_json

    def conform(value: Any) -> Any:
        if type(value) is not dict:
            return _scalar(value, "")
        return {k: (fields.get(k) or extra)(v) for k, v in value.items()}

    return conform


def _resolve(root: Any, ref: str) -> Any:
    node = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
