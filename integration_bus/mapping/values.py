"""Runtime value semantics shared by the compiler, the reference interpreter and the functions.

Values are JSON values plus ``Decimal`` (every number the language computes), ``date`` and
``datetime``. Numbers arriving as ``int``, ``float`` (converted through its shortest repr, so 19.99
stays 19.99) or numeric text become ``Decimal`` where arithmetic needs them; nothing computes in
binary floating point. Every problem raises :class:`MappingError`.
"""

from __future__ import annotations

import decimal
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from integration_bus.errors import MappingError

__all__ = [
    "DECIMAL_CONTEXT", "MAX_INPUT_EXPONENT", "compare", "concat_text", "equals", "is_number",
    "to_decimal", "to_text", "truthy", "type_name",
]

# Decimal128 precision; anything that would overflow, divide by zero or be undefined raises.
# Code that computes passes this context explicitly (``DECIMAL_CONTEXT.add(a, b)``,
# ``quantize(..., context=DECIMAL_CONTEXT)``) instead of installing it per call, so results never
# depend on the caller's thread context. Its status flags are never read (traps fire per operation).
DECIMAL_CONTEXT = decimal.Context(
    prec=34, rounding=decimal.ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
MAX_INPUT_EXPONENT = 1000
_MAX_NUMBER_TEXT = 100


def type_name(value: Any) -> str:
    """The language's name for the type of ``value`` (used in error messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, date):
        return "date"
    return type(value).__name__


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def to_decimal(value: Any, what: str = "value") -> Decimal:
    """``value`` as a finite Decimal; text must be a plain decimal number."""
    kind = type(value)
    if kind is Decimal:
        if not value.is_finite():
            raise MappingError(f"{what} is not a finite number: {value}")
        return value  # type: ignore[no-any-return]
    if kind is str:
        if len(value) <= _MAX_NUMBER_TEXT:  # the common case of _parse_decimal, inline
            try:
                number = Decimal(value, DECIMAL_CONTEXT)
            except decimal.InvalidOperation:
                return _parse_decimal(value, what)
            if number.is_finite() and abs(number.adjusted()) <= MAX_INPUT_EXPONENT:
                return number
        return _parse_decimal(value, what)
    if kind is int:
        return Decimal(value)
    if kind is float:
        if value - value == 0.0:  # finite: its shortest repr is a plain decimal number
            return Decimal(repr(value))
        return _parse_decimal(repr(value), what)
    if value is None:
        raise MappingError(f"{what} is null where a number is needed",
                           hint="give a fallback with '| default(0)'")
    raise MappingError(f"{what} is {type_name(value)} where a number is needed")


def _parse_decimal(text: str, what: str) -> Decimal:
    # Decimal() ignores surrounding white space itself, so short text skips the strip() copy.
    stripped = text if len(text) <= _MAX_NUMBER_TEXT else text.strip()
    if len(stripped) > _MAX_NUMBER_TEXT:
        raise MappingError(f"{what} {text[:40]!r} is not a number")
    try:
        number = Decimal(stripped, DECIMAL_CONTEXT)
    except decimal.InvalidOperation as exc:
        raise MappingError(f"{what} {text[:40]!r} is not a number") from exc
    if not number.is_finite() or abs(number.adjusted()) > MAX_INPUT_EXPONENT:
        raise MappingError(f"{what} {text[:40]!r} is not a usable number")
    return number


def to_text(value: Any, what: str = "value") -> str:
    """Canonical text of a scalar: numbers without exponent noise, booleans as true/false."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal | float):
        number = to_decimal(value, what)
        text = str(number)  # the same as f"{number:f}" unless written with an exponent
        return text if "E" not in text else f"{number:f}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None:
        raise MappingError(f"{what} is null where text is needed",
                           hint="give a fallback with \"| default('')\"")
    raise MappingError(f"{what} is {type_name(value)} where text is needed")


def concat_text(left: Any, right: Any) -> str:
    """The ``~`` operator: text joining where null counts as empty text."""
    return ("" if left is None else to_text(left)) + ("" if right is None else to_text(right))


def truthy(value: Any) -> bool:
    """null, false, empty text, empty list and empty object are false; all else is true."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def equals(left: Any, right: Any) -> bool:
    """``==``: numbers compare by value (numeric text counts as a number against a number)."""
    if left is None or right is None:
        return left is right
    left_num, right_num = is_number(left), is_number(right)
    if left_num or right_num:
        if isinstance(left, bool) or isinstance(right, bool):
            return False
        if not (left_num or isinstance(left, str)) or not (right_num or isinstance(right, str)):
            return False
        try:
            return to_decimal(left) == to_decimal(right)
        except MappingError:
            return False
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if type(left) is not type(right) and not (isinstance(left, date) and isinstance(right, date)):
        return False
    if isinstance(left, list):
        return len(left) == len(right) and \
            all(equals(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(equals(left[k], right[k]) for k in left)
    if isinstance(left, datetime) != isinstance(right, datetime):
        return False
    try:
        return bool(left == right)
    except TypeError as exc:  # naive vs aware datetimes
        raise MappingError(f"cannot compare {left} with {right}: {exc}") from exc


def compare(op: str, left: Any, right: Any) -> bool:
    """``< <= > >=``: numbers (or numeric text against a number), text, dates, datetimes."""
    if is_number(left) or is_number(right):
        a: Any = to_decimal(left, "left side")
        b: Any = to_decimal(right, "right side")
    elif isinstance(left, str) and isinstance(right, str):
        a, b = left, right
    elif isinstance(left, datetime) and isinstance(right, datetime):
        if (left.tzinfo is None) != (right.tzinfo is None):
            raise MappingError("cannot compare a datetime with a time zone to one without")
        a, b = left, right
    elif (isinstance(left, date) and isinstance(right, date)
          and not isinstance(left, datetime) and not isinstance(right, datetime)):
        a, b = left, right
    else:
        raise MappingError(f"cannot order {type_name(left)} and {type_name(right)} with {op}")
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)
