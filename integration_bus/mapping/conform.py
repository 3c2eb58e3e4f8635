"""Turning computed values into JSON values, as the output schema says.

Inside a mapping numbers are ``Decimal`` and dates are ``date``/``datetime``. A document leaving a
mapping (or entering a ``validate`` step) is *conformed*: where the schema says ``string`` a Decimal
becomes its plain decimal text (``"59.97"``), where it says ``integer`` a whole Decimal becomes an
``int``, where it says ``number`` it stays an exact ``Decimal``; dates become ISO 8601 text.
Without schema information the bus default applies: decimals as text. Floats never survive: one
arriving from input is converted through its shortest repr.

A schema is turned into a :class:`Plan` once, at load. Its ``conform`` conforms a whole value; its
parts (``field(key)``, ``items()``) let a builder that makes the object or list itself conform each
part as it is built, so the final ``map`` of a mapping needs no second pass over its output.
Every conformer returns the values in :data:`PASS_THROUGH` unchanged, so a builder may skip them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from integration_bus.mapping.values import DECIMAL_CONTEXT

__all__ = ["PASS_THROUGH", "PLAIN", "Conformer", "Plan", "conformer_for", "decimal_text",
           "plain_json", "plan_for"]

Conformer = Callable[[Any], Any]
PASS_THROUGH: frozenset[type] = frozenset({str, int, bool, type(None)})
"""Types of the values every conformer returns as they are (JSON scalars)."""
_MAX_DEPTH = 24


def decimal_text(number: Decimal) -> str:
    """Plain decimal notation, no exponent, no negative zero: ``Decimal('1E+2')`` -> ``"100"``."""
    if not number and number.is_signed():
        number = number.copy_abs()
    text = str(number)  # the same text as f"{number:f}" unless it is written with an exponent
    return text if "E" not in text else f"{number:f}"


def plain_json(value: Any) -> Any:
    """The bus default: Decimals and floats as decimal text, dates as ISO text (new containers)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is Decimal and value.is_finite():
        return decimal_text(value)
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
        if want == "integer" and _whole(value):
            return int(value)
        if want == "number":
            return int(value) if _whole(value) and value.as_tuple().exponent == 0 else value
        return decimal_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return plain_json(value)
    return value


def _whole(value: Decimal) -> bool:
    return bool(value == value.to_integral_value(None, DECIMAL_CONTEXT)) and value.adjusted() < 30


class Plan:
    """How the values at one place of an output document are conformed.

    ``conform`` conforms any value found there. For an object schema ``field(key)`` is the plan
    of one of its keys, for an array schema ``items()`` the plan of its items; both are None when
    the schema expects no such container here (then build the value and ``conform`` it whole).
    """

    __slots__ = ("_extra", "_fields", "_item", "conform")

    def __init__(self, conform: Conformer, *, fields: Mapping[str, Plan] | None = None,
                 extra: Plan | None = None, item: Plan | None = None) -> None:
        self.conform = conform
        self._fields = fields
        self._extra = extra
        self._item = item

    def builds_object(self) -> bool:
        return self._fields is not None

    def field(self, key: str) -> Plan:
        """Plan of ``key``; only for a plan that :meth:`builds_object`."""
        assert self._fields is not None
        return self._fields.get(key) or self._extra or PLAIN

    def items(self) -> Plan | None:
        return self._item


def _plain_leaf(value: Any) -> Any:
    """:func:`plain_json` for a value a builder made (rarely text, often a Decimal): the
    Decimal case first and inline, as this runs for every computed number in an output."""
    if type(value) is Decimal and value.is_finite():
        if not value and value.is_signed():
            value = value.copy_abs()
        text = str(value)
        return text if "E" not in text else f"{value:f}"
    return plain_json(value)


class _PlainPlan(Plan):
    """The bus default everywhere: objects and lists keep their structure, values are plain."""

    def builds_object(self) -> bool:
        return True

    def field(self, key: str) -> Plan:
        return self

    def items(self) -> Plan | None:
        return self


PLAIN: Plan = _PlainPlan(_plain_leaf)


def conformer_for(schema: Any) -> Conformer:
    """A function conforming values to ``schema`` (local ``$ref``s followed)."""
    return plan_for(schema).conform


def plan_for(schema: Any, root: Any | None = None, depth: int = 0) -> Plan:
    """The conform plan of ``schema`` (local ``$ref``s followed; unions conform plainly)."""
    root = schema if root is None else root
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return PLAIN
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        return plan_for(_resolve(root, ref), root, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list):
            typed = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            if len(typed) == 1:
                return plan_for(typed[0], root, depth + 1)
            return PLAIN
    types = schema.get("type")
    type_set = {types} if isinstance(types, str) else set(types or [])
    type_set.discard("null")
    if "properties" in schema or type_set == {"object"}:
        return _object_plan(schema, root, depth)
    if type_set == {"array"}:
        return _array_plan(plan_for(schema.get("items"), root, depth + 1))
    want = "string"
    if "string" not in type_set:
        want = "number" if "number" in type_set else ("integer" if "integer" in type_set else want)
    return Plan(lambda value: _scalar(value, want) if type(value) is not str else value)


def _array_plan(item: Plan) -> Plan:
    conform_item = item.conform

    def conform(value: Any) -> Any:
        if type(value) is list:
            return [conform_item(v) for v in value]
        return _scalar(value, "")

    return Plan(conform, item=item)


def _object_plan(schema: Mapping[str, Any], root: Any, depth: int) -> Plan:
    props = schema.get("properties") or {}
    fields = {str(k): plan_for(v, root, depth + 1) for k, v in props.items()}
    extra_schema = schema.get("additionalProperties")
    extra = plan_for(extra_schema, root, depth + 1) if isinstance(extra_schema, Mapping) else PLAIN
    conformers = {k: plan.conform for k, plan in fields.items()}
    conform_extra = extra.conform

    def conform(value: Any) -> Any:
        if type(value) is not dict:
            return _scalar(value, "")
        return {k: (conformers.get(k) or conform_extra)(v) for k, v in value.items()}

    return Plan(conform, fields=fields, extra=extra)


def _resolve(root: Any, ref: str) -> Any:
    node = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
