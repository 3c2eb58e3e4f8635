"""The function registry: every function an expression may call, with its arity and binding.

A :class:`FunctionSpec` names an implementation and how many arguments it takes (the piped
subject counts as the first). Functions whose arguments can be checked or pre-computed at load
(``round(2, 'half_up')``, ``xref('sku')``, ``to_tz('Europe/Berlin')``) have a ``bind`` hook: it
receives the literal argument values (or :data:`UNKNOWN` for computed ones) and returns the
implementation to call at run time, or raises :class:`BindError` naming the bad argument.

Registries are plain immutable values built by
:func:`~integration_bus.mapping.builtin_functions.default_registry`; a caller that wants more
functions builds its own with :meth:`FunctionRegistry.with_functions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, Protocol

__all__ = [
    "UNKNOWN", "BindContext", "BindError", "FunctionRegistry", "FunctionSpec", "Resolver",
    "XrefTable", "built_in",
]


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()
"""Stands for an argument whose value is only known at run time."""

Resolver = Callable[[Any], Any]
"""A store lookup the runtime injects: key -> value, or None when there is no match.

It may raise a ``BusError`` (e.g. ``TransientError`` while the store is down); that error reaches
the worker unchanged.
"""


class XrefTable(Protocol):
    """A loaded cross-reference table (see :mod:`.xref`)."""

    name: str

    def column(self, column: str | None) -> Mapping[str, Any]: ...

    @property
    def columns(self) -> tuple[str, ...]: ...


class BindError(Exception):
    """Raised by a bind hook: argument ``arg`` (0 = the subject) is wrong at load time."""

    def __init__(self, message: str, arg: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.arg = arg
        self.hint = hint


@dataclass(frozen=True, slots=True)
class BindContext:
    """What a bind hook may see: the xref tables and the injected resolvers."""

    tables: Mapping[str, XrefTable] = field(default_factory=dict)
    resolvers: Mapping[str, Resolver] = field(default_factory=dict)


Binder = Callable[[BindContext, tuple[Any, ...]], Callable[..., Any]]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One function.

    ``min_args``/``max_args`` count the subject (``None`` = any number). When ``null_passes`` is
    true a null subject returns null without calling ``impl`` (most functions); functions about
    null (``default``, ``coalesce``, ``is_null``) set it false. ``signature`` and ``summary`` feed
    error hints and the docs.

    ``context_free`` says that ``impl`` does not rely on the ambient ``decimal`` context (it passes
    ``values.DECIMAL_CONTEXT`` explicitly where it computes, or does not compute at all). Every
    built-in function is; a mapping that calls a function which is not (the default for functions
    added with :meth:`FunctionRegistry.with_functions`) runs each document inside
    ``decimal.localcontext(DECIMAL_CONTEXT)``.

    ``fast`` maps exact subject types to callables (usually C-level, such as ``str.upper``) that
    return what ``impl`` returns for such a subject and never fail; a call without further
    arguments uses them instead of ``impl``. Null is never among the types.

    ``returns`` is the type of every result other than null, when there is one (``str`` for
    ``upper``); the compiler then knows, for example, that the value needs no conforming.
    """

    name: str
    impl: Callable[..., Any]
    min_args: int
    max_args: int | None
    signature: str
    summary: str
    null_passes: bool = True
    bind: Binder | None = None
    context_free: bool = False
    fast: Mapping[type, Callable[[Any], Any]] | None = None
    returns: type | None = None

    def __post_init__(self) -> None:
        if self.fast is not None and type(None) in self.fast:
            raise ValueError(f"function {self.name!r}: a fast path for null would skip "
                             "null_passes")

    def accepts(self, count: int) -> bool:
        return count >= self.min_args and (self.max_args is None or count <= self.max_args)


class FunctionRegistry:
    """An immutable set of functions by name."""

    def __init__(self, specs: Iterable[FunctionSpec]) -> None:
        table: dict[str, FunctionSpec] = {}
        for spec in specs:
            if spec.name in table:
                raise ValueError(f"function {spec.name!r} registered twice")
            table[spec.name] = spec
        self._specs: Mapping[str, FunctionSpec] = MappingProxyType(table)

    def get(self, name: str) -> FunctionSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[FunctionSpec]:
        return [self._specs[name] for name in self.names()]

    def with_functions(self, specs: Iterable[FunctionSpec]) -> FunctionRegistry:
        """A new registry with ``specs`` added (a name may not be registered twice)."""
        return FunctionRegistry([*self._specs.values(), *specs])


def built_in(specs: Iterable[FunctionSpec],
             returns: Mapping[str, type] | None = None) -> list[FunctionSpec]:
    """``specs`` marked :attr:`FunctionSpec.context_free`, with the result types in ``returns``
    (by function name); for the built-in function modules."""
    types = returns or {}
    return [replace(spec, context_free=True, returns=types.get(spec.name, spec.returns))
            for spec in specs]


def literal_int(args: tuple[Any, ...], index: int, name: str, low: int, high: int,
                default: int | None = None) -> int | _Unknown | None:
    """Helper for bind hooks: argument ``index`` as an int in [low, high], if it is literal."""
    from decimal import Decimal

    if index >= len(args):
        return default
    value = args[index]
    if isinstance(value, _Unknown):
        return UNKNOWN
    if not isinstance(value, Decimal | int) or isinstance(value, bool) or value != int(value):
        raise BindError(f"{name} must be a whole number", index)
    number = int(value)
    if not low <= number <= high:
        raise BindError(f"{name} must be between {low} and {high}, got {number}", index)
    return number
