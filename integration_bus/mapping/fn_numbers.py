"""Numbers (Decimal, scale and rounding), booleans, null handling and list functions."""

from __future__ import annotations

import decimal
import operator
from decimal import Decimal
from typing import Any

from integration_bus.errors import MappingError
from integration_bus.mapping.functions import (
    UNKNOWN,
    BindContext,
    BindError,
    FunctionSpec,
    built_in,
    literal_int,
)
from integration_bus.mapping.values import DECIMAL_CONTEXT, to_decimal, to_text, type_name

__all__ = ["DEFAULT_ROUNDING", "ROUNDING_MODES", "SPECS"]

ROUNDING_MODES = {
    "half_up": decimal.ROUND_HALF_UP,
    "half_even": decimal.ROUND_HALF_EVEN,
    "half_down": decimal.ROUND_HALF_DOWN,
    "up": decimal.ROUND_UP,
    "down": decimal.ROUND_DOWN,
    "ceiling": decimal.ROUND_CEILING,
    "floor": decimal.ROUND_FLOOR,
}
DEFAULT_ROUNDING = "half_up"
MAX_SCALE = 18
_INT_DIGITS = 30
_CTX = DECIMAL_CONTEXT
_EXPONENTS = tuple(Decimal((0, (1,), -places)) for places in range(MAX_SCALE + 1))  # 1, 0.1, ...


def _integer(value: Any) -> int:
    if type(value) is int:
        return value
    number = to_decimal(value)
    if number != number.to_integral_value(context=_CTX):
        raise MappingError(f"{value} is not a whole number",
                           hint="round it first: | round(0)")
    if number.adjusted() >= _INT_DIGITS:
        raise MappingError(f"{value} is too large for an integer")
    return int(number)


def _mode(name: Any) -> str:
    mode = ROUNDING_MODES.get(name) if isinstance(name, str) else None
    if mode is None:
        raise MappingError(f"unknown rounding mode {name!r}",
                           hint="use one of " + ", ".join(ROUNDING_MODES))
    return mode


def _round(value: Any, scale: Any = 0, mode: Any = DEFAULT_ROUNDING) -> Decimal:
    number = to_decimal(value)
    places = _integer(scale)
    if not 0 <= places <= MAX_SCALE:
        raise MappingError(f"scale must be between 0 and {MAX_SCALE}, got {places}")
    return number.quantize(_EXPONENTS[places], _mode(mode), _CTX)


def _bind_round(ctx: BindContext, args: tuple[Any, ...]) -> Any:
    places = literal_int(args, 1, "scale", 0, MAX_SCALE, default=0)
    mode: Any = args[2] if len(args) > 2 else DEFAULT_ROUNDING
    if mode is not UNKNOWN and mode not in ROUNDING_MODES:
        from integration_bus.suggest import closest

        raise BindError(f"unknown rounding mode {mode!r}", 2,
                        hint=closest(str(mode), ROUNDING_MODES) or
                        "use one of " + ", ".join(ROUNDING_MODES))
    if isinstance(places, int) and mode is not UNKNOWN:
        exponent = _EXPONENTS[places]
        rounding = ROUNDING_MODES[mode]

        def fixed_round(value: Any, *_: Any) -> Decimal:
            number = value if type(value) is Decimal else to_decimal(value)
            return number.quantize(exponent, rounding, _CTX)  # positional: keywords cost 2x

        return fixed_round
    return _round


def _abs(value: Any) -> Decimal:
    return _CTX.abs(to_decimal(value))


def _floor(value: Any) -> Decimal:
    return to_decimal(value).to_integral_value(rounding=decimal.ROUND_FLOOR, context=_CTX)


def _ceil(value: Any) -> Decimal:
    return to_decimal(value).to_integral_value(rounding=decimal.ROUND_CEILING, context=_CTX)


def _items(values: tuple[Any, ...], name: str) -> list[Any]:
    if len(values) == 1:
        if isinstance(values[0], list):
            return list(values[0])
        raise MappingError(f"{name}() needs a list or several values, got {type_name(values[0])}")
    return list(values)


def _min(*values: Any) -> Decimal:
    numbers = [to_decimal(v) for v in _items(values, "min")]
    if not numbers:
        raise MappingError("min() of an empty list")
    return min(numbers)


def _max(*values: Any) -> Decimal:
    numbers = [to_decimal(v) for v in _items(values, "max")]
    if not numbers:
        raise MappingError("max() of an empty list")
    return max(numbers)


_TRUE = {"true", "yes", "y", "1", "t", "on"}
_FALSE = {"false", "no", "n", "0", "f", "off", ""}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    elif isinstance(value, int | Decimal):
        number = to_decimal(value)
        if number in (0, 1):
            return number == 1
    raise MappingError(f"{value!r} is not a boolean",
                       hint="accepted: true/false, yes/no, y/n, 1/0, on/off")


def _default(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _coalesce(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def _is_null(value: Any) -> bool:
    return value is None


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise MappingError(f"{name}() needs a list, got {type_name(value)}")
    return value


def _sum(value: Any) -> Decimal:
    total = Decimal(0)
    for index, item in enumerate(_list(value, "sum")):
        total = _CTX.add(total, to_decimal(item, f"item [{index}]"))
    return total


def _count(value: Any) -> int:
    if value is None:
        return 0
    return len(_list(value, "count"))


def _join(value: Any, separator: Any = "") -> str:
    sep = to_text(separator, "separator")
    return sep.join(to_text(item, f"item [{i}]") for i, item in enumerate(_list(value, "join"))
                    if item is not None)


def _first(value: Any) -> Any:
    items = _list(value, "first")
    return items[0] if items else None


def _last(value: Any) -> Any:
    items = _list(value, "last")
    return items[-1] if items else None


_RETURNS: dict[str, type] = {
    **dict.fromkeys(["decimal", "round", "abs", "floor", "ceil", "min", "max", "sum"], Decimal),
    "integer": int, "count": int, "join": str, "bool": bool, "is_null": bool,
}

SPECS = built_in([
    FunctionSpec("decimal", to_decimal, 1, 1, "value | decimal",
                 "A number from a number or numeric text (exact, never a float)."),
    FunctionSpec("integer", _integer, 1, 1, "value | integer",
                 "A whole number; refuses values with a fraction.",
                 fast={int: operator.index}),
    FunctionSpec("round", _round, 1, 3, "number | round(scale?, mode?)",
                 "Round to scale decimal places (default 0) with mode half_up (default), "
                 "half_even, half_down, up, down, ceiling or floor.", bind=_bind_round),
    FunctionSpec("abs", _abs, 1, 1, "number | abs", "Absolute value."),
    FunctionSpec("floor", _floor, 1, 1, "number | floor", "Round down to a whole number."),
    FunctionSpec("ceil", _ceil, 1, 1, "number | ceil", "Round up to a whole number."),
    FunctionSpec("min", _min, 1, None, "min(a, b, ...) or list | min",
                 "Smallest number.", null_passes=False),
    FunctionSpec("max", _max, 1, None, "max(a, b, ...) or list | max",
                 "Largest number.", null_passes=False),
    FunctionSpec("bool", _bool, 1, 1, "value | bool",
                 "A boolean from true/false, yes/no, y/n, 1/0, on/off."),
    FunctionSpec("default", _default, 2, 2, "value | default(fallback)",
                 "fallback when the value is null.", null_passes=False),
    FunctionSpec("coalesce", _coalesce, 1, None, "coalesce(a, b, ...)",
                 "The first value that is not null.", null_passes=False),
    FunctionSpec("is_null", _is_null, 1, 1, "value | is_null", "Whether the value is null.",
                 null_passes=False),
    FunctionSpec("sum", _sum, 1, 1, "list | sum", "Sum of the numbers in a list."),
    FunctionSpec("count", _count, 1, 1, "list | count",
                 "Number of items (0 for null).", null_passes=False),
    FunctionSpec("join", _join, 1, 2, "list | join(separator?)",
                 "Join the items as text, skipping nulls."),
    FunctionSpec("first", _first, 1, 1, "list | first", "First item, or null if empty."),
    FunctionSpec("last", _last, 1, 1, "list | last", "Last item, or null if empty."),
], returns=_RETURNS)
