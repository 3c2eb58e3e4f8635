"""Closures for function calls: ``f(x, a, ...)`` and its pipe form ``x | f(a, ...)``.

A call evaluates its subject (the first argument), returns null for a null subject when the
function lets nulls pass, then calls the implementation with the other arguments. Standard
exceptions escaping an implementation become a :class:`MappingError` naming the function here, at
the one call boundary.

What is known at load is used to call with less work; the result is always the same:

- literal arguments are passed as constants rather than evaluated for every document;
- a subject that reads a field of the current scope (``sku``, ``customer.email``) is read inline;
- a subject of a type the function has a fast path for (``str.upper`` for text) is handed to
  that C-level callable directly;
- a two-stage pipe ``x | f | g(literal)`` runs in one closure.

Nested closures are the fastest shape on CPython 3.11+: a loop over stages or a ``*args`` call
costs more than the frames it saves, so the common shapes are written out below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from integration_bus.errors import MappingError
from integration_bus.mapping.context import Ctx, Fn, get_field

__all__ = ["BoundCall", "call_fn"]

_FAILURES = (TypeError, ValueError, ArithmeticError, LookupError)
_NONE: Any = object()  # "no constant argument"
Impl = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class BoundCall:
    """A compiled call: what :func:`call_fn` needs to build its closure."""

    name: str
    impl: Impl
    args: tuple[Fn, ...]
    null_passes: bool
    consts: tuple[Any, ...] | None = None
    """The values of ``args[1:]`` when all of them are literals."""
    fields: tuple[str, ...] = ()
    """The field names when ``args[0]`` reads one field, or a field of a field, of the scope."""
    fast: Mapping[type, Impl] | None = None
    """Callables for subjects of exactly these types (see ``FunctionSpec.fast``)."""


def _fail(name: str, exc: Exception) -> MappingError:
    error = MappingError(f"{name}(): {exc}")
    error.__cause__ = exc
    return error


def call_fn(call: BoundCall, subject: BoundCall | None = None) -> Fn:
    """The closure for ``call``; ``subject`` is the compiled call its first argument is, if any."""
    consts = call.consts
    if subject is not None and subject.consts == () and consts is not None and len(consts) <= 1:
        return _pipe2(subject, call, consts[0] if consts else _NONE)
    if consts == ():
        return _unary(call)
    if consts is not None and len(consts) == 1:
        return _with_const(call, consts[0])
    if len(call.args) == 2:
        return _binary(call)
    return _nary(call)


def _unary(call: BoundCall) -> Fn:
    name, impl, null_passes, fast = call.name, call.impl, call.null_passes, call.fast
    if not call.fields:
        a = call.args[0]

        def call1(cur: Any, ctx: Ctx) -> Any:
            value = a(cur, ctx)
            if fast is not None:
                direct = fast.get(type(value))
                if direct is not None:
                    return direct(value)
            if value is None and null_passes:
                return None
            try:
                return impl(value)
            except MappingError:
                raise
            except _FAILURES as exc:
                raise _fail(name, exc) from exc

        return call1
    key, key2 = call.fields[0], call.fields[1] if len(call.fields) > 1 else None

    def call1_field(cur: Any, ctx: Ctx) -> Any:
        value = cur.get(key) if type(cur) is dict else get_field(cur, key)
        if key2 is not None:
            value = value.get(key2) if type(value) is dict else get_field(value, key2)
        if fast is not None:
            direct = fast.get(type(value))
            if direct is not None:
                return direct(value)
        if value is None and null_passes:
            return None
        try:
            return impl(value)
        except MappingError:
            raise
        except _FAILURES as exc:
            raise _fail(name, exc) from exc

    return call1_field


def _with_const(call: BoundCall, const: Any) -> Fn:
    name, impl, null_passes = call.name, call.impl, call.null_passes
    if len(call.fields) != 1:
        a = call.args[0]

        def call_const(cur: Any, ctx: Ctx) -> Any:
            value = a(cur, ctx)
            if value is None and null_passes:
                return None
            try:
                return impl(value, const)
            except MappingError:
                raise
            except _FAILURES as exc:
                raise _fail(name, exc) from exc

        return call_const
    key = call.fields[0]

    def call_const_field(cur: Any, ctx: Ctx) -> Any:
        value = cur.get(key) if type(cur) is dict else get_field(cur, key)
        if value is None and null_passes:
            return None
        try:
            return impl(value, const)
        except MappingError:
            raise
        except _FAILURES as exc:
            raise _fail(name, exc) from exc

    return call_const_field


def _pipe2(first: BoundCall, second: BoundCall, const: Any) -> Fn:
    """``x | f | g`` or ``x | f | g(literal)`` in one closure (``f`` takes no arguments)."""
    name1, impl1, passes1, fast1 = first.name, first.impl, first.null_passes, first.fast
    name2, impl2, passes2 = second.name, second.impl, second.null_passes
    a = first.args[0]
    key = first.fields[0] if len(first.fields) == 1 else None
    if key is not None and fast1 is None and const is not _NONE:
        # the commonest shape (a field, a conversion, a function of a literal) without the
        # general closure's branches
        def pipe2_field_const(cur: Any, ctx: Ctx) -> Any:
            value = cur.get(key) if type(cur) is dict else get_field(cur, key)
            if value is not None or not passes1:
                try:
                    value = impl1(value)
                except MappingError:
                    raise
                except _FAILURES as exc:
                    raise _fail(name1, exc) from exc
            if value is None and passes2:
                return None
            try:
                return impl2(value, const)
            except MappingError:
                raise
            except _FAILURES as exc:
                raise _fail(name2, exc) from exc

        return pipe2_field_const

    def pipe2(cur: Any, ctx: Ctx) -> Any:
        if key is None:
            value = a(cur, ctx)
        else:
            value = cur.get(key) if type(cur) is dict else get_field(cur, key)
        direct = None if fast1 is None else fast1.get(type(value))
        if direct is not None:
            value = direct(value)
        elif value is not None or not passes1:
            try:
                value = impl1(value)
            except MappingError:
                raise
            except _FAILURES as exc:
                raise _fail(name1, exc) from exc
        if value is None and passes2:
            return None
        try:
            return impl2(value) if const is _NONE else impl2(value, const)
        except MappingError:
            raise
        except _FAILURES as exc:
            raise _fail(name2, exc) from exc

    return pipe2


def _binary(call: BoundCall) -> Fn:
    name, impl, null_passes = call.name, call.impl, call.null_passes
    a, b = call.args

    def call2(cur: Any, ctx: Ctx) -> Any:
        value = a(cur, ctx)
        if value is None and null_passes:
            return None
        try:
            return impl(value, b(cur, ctx))
        except MappingError:
            raise
        except _FAILURES as exc:
            raise _fail(name, exc) from exc

    return call2


def _nary(call: BoundCall) -> Fn:
    name, impl, null_passes = call.name, call.impl, call.null_passes
    first, rest = call.args[0], call.args[1:]

    def calln(cur: Any, ctx: Ctx) -> Any:
        value = first(cur, ctx)
        if value is None and null_passes:
            return None
        try:
            return impl(value, *[f(cur, ctx) for f in rest])
        except MappingError:
            raise
        except _FAILURES as exc:
            raise _fail(name, exc) from exc

    return calln
