"""Operators: the semantics of ``- not + - * / % ~ == != < <= > >= in`` as plain functions,
plus their compiled (closure) forms.

Arithmetic converts operands with :func:`to_decimal` (so numeric text and JSON numbers work) and
computes in Decimal; null is refused with a hint to use ``default``. Decimal traps (overflow,
division by zero) become :class:`MappingError`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from integration_bus.errors import MappingError
from integration_bus.mapping.context import Ctx, Fn, get_field
from integration_bus.mapping.values import (
    DECIMAL_CONTEXT,
    compare,
    concat_text,
    equals,
    to_decimal,
    to_text,
    truthy,
    type_name,
)

__all__ = ["apply_binary", "apply_unary", "binary_op", "concat_op", "unary_op"]

# Bound to the language's context, so no per-call context switch is needed (see values.py).
_ARITH: dict[str, Callable[[Decimal, Decimal], Decimal]] = {
    "+": DECIMAL_CONTEXT.add,
    "-": DECIMAL_CONTEXT.subtract,
    "*": DECIMAL_CONTEXT.multiply,
    "/": DECIMAL_CONTEXT.divide,
    "%": DECIMAL_CONTEXT.remainder,
}
_negate = DECIMAL_CONTEXT.minus
_NAMES = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "%": "take the remainder of"}


def _arith_error(op: str, exc: ArithmeticError) -> MappingError:
    if "DivisionByZero" in type(exc).__name__ or "division" in str(exc).lower():
        return MappingError(f"cannot {_NAMES[op]} by zero")
    return MappingError(f"cannot {_NAMES[op]}: result out of range ({type(exc).__name__})")


def arith(op: str, left: Any, right: Any) -> Decimal:
    """``left op right`` in Decimal."""
    a = to_decimal(left, "left operand")
    b = to_decimal(right, "right operand")
    if op in "/%" and b == 0:
        raise MappingError(f"cannot {_NAMES[op]} by zero")
    try:
        return _ARITH[op](a, b)
    except ArithmeticError as exc:
        raise _arith_error(op, exc) from exc


def member(left: Any, right: Any) -> bool:
    """``left in right``: an equal item of a list, or a part of a text."""
    if right is None:
        return False
    if isinstance(right, list):
        return any(equals(left, item) for item in right)
    if isinstance(right, str):
        return left is not None and to_text(left) in right
    raise MappingError(f"'in' needs a list or text on the right, got {type_name(right)}")


def apply_binary(op: str, left: Any, right: Any) -> Any:
    """The value of ``left op right`` (used by the reference interpreter)."""
    if op in _ARITH:
        return arith(op, left, right)
    if op == "~":
        return concat_text(left, right)
    if op == "==":
        return equals(left, right)
    if op == "!=":
        return not equals(left, right)
    if op == "in":
        return member(left, right)
    return compare(op, left, right)


def apply_unary(op: str, value: Any) -> Any:
    if op == "not":
        return not truthy(value)
    return _negate(to_decimal(value, "operand"))


def binary_op(op: str, left: Fn, right: Fn) -> Fn:
    """Closure for ``left op right``, with a fast path when both operands are Decimals."""
    if op in _ARITH:
        method = _ARITH[op]
        guarded = op in "/%"

        def arith_fn(cur: Any, ctx: Ctx) -> Any:
            a = left(cur, ctx)
            b = right(cur, ctx)
            if type(a) is not Decimal or type(b) is not Decimal or guarded:
                return arith(op, a, b)
            try:
                return method(a, b)
            except ArithmeticError as exc:
                raise _arith_error(op, exc) from exc

        return arith_fn
    plain: Callable[[Any, Any], Any] = {
        "~": concat_text,
        "==": equals,
        "!=": lambda a, b: not equals(a, b),
        "in": member,
    }.get(op) or (lambda a, b: compare(op, a, b))
    return lambda cur, ctx: plain(left(cur, ctx), right(cur, ctx))


def concat_op(left: Fn, right: Fn, left_text: str | None, right_text: str | None,
              right_field: str | None = None) -> Fn:
    """Closure for ``left ~ right``; a literal side comes as its text, converted once at load."""
    if left_text is not None and right_text is None and right_field is not None:
        def concat_field(cur: Any, ctx: Ctx) -> str:
            value = cur.get(right_field) if type(cur) is dict else get_field(cur, right_field)
            if type(value) is str:
                return left_text + value
            return left_text + ("" if value is None else to_text(value))

        return concat_field
    if left_text is not None and right_text is None:
        def concat_after(cur: Any, ctx: Ctx) -> str:
            value = right(cur, ctx)
            if type(value) is str:
                return left_text + value
            return left_text + ("" if value is None else to_text(value))

        return concat_after
    if right_text is not None and left_text is None:
        def concat_before(cur: Any, ctx: Ctx) -> str:
            value = left(cur, ctx)
            if type(value) is str:
                return value + right_text
            return ("" if value is None else to_text(value)) + right_text

        return concat_before
    return lambda cur, ctx: concat_text(left(cur, ctx), right(cur, ctx))


def unary_op(op: str, operand: Fn) -> Fn:
    if op == "not":
        return lambda cur, ctx: not truthy(operand(cur, ctx))

    def negate(cur: Any, ctx: Ctx) -> Any:
        return _negate(to_decimal(operand(cur, ctx), "operand"))

    return negate
