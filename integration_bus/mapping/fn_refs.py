"""``xref`` (cross-reference tables) and ``lookup`` (resolvers the runtime injects, e.g. the store).

Both need their table or resolver named by a literal so it can be checked at load; a miss raises a
MappingError unless a default is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from integration_bus.errors import MappingError
from integration_bus.mapping.functions import UNKNOWN, BindContext, BindError, FunctionSpec
from integration_bus.mapping.values import to_text, type_name
from integration_bus.suggest import closest

__all__ = ["SPECS", "xref_key"]

_NO_DEFAULT = object()


def xref_key(value: Any) -> str:
    """The text a value is looked up by (numbers by their canonical text)."""
    if isinstance(value, dict | list):
        raise MappingError(f"cannot look up a {type_name(value)}")
    return to_text(value, "key")


def _unbound(*_: Any) -> Any:  # pragma: no cover - bind always replaces it
    raise MappingError("xref/lookup must be bound at load")


def _bind_xref(ctx: BindContext, args: tuple[Any, ...]) -> Callable[..., Any]:
    spec = args[1]
    if spec is UNKNOWN or not isinstance(spec, str):
        raise BindError("the table must be a literal such as 'sku' or 'location.erp_plant'", 1)
    table_name, _, column = spec.partition(".")
    table = ctx.tables.get(table_name)
    if table is None:
        known = sorted(ctx.tables)
        raise BindError(f"unknown xref table {table_name!r}", 1,
                        hint=closest(table_name, known) or
                        (f"tables: {', '.join(known)}" if known else
                         "put NAME.csv or NAME.yaml in mappings/xref/"))
    if column and column not in table.columns:
        raise BindError(f"xref table {table_name!r} has no column {column!r}", 1,
                        hint=closest(column, table.columns) or
                        f"columns: {', '.join(table.columns)}")
    values = table.column(column or None)
    has_default = len(args) > 2

    def xref(value: Any, _table: Any = None, default: Any = _NO_DEFAULT) -> Any:
        key = value if type(value) is str else xref_key(value)
        found = values.get(key, _NO_DEFAULT)
        if found is not _NO_DEFAULT:
            return found
        if has_default:
            return default
        raise MappingError(f"no entry for {key!r} in xref table {spec!r}",
                           hint="add it to the table, or give a default: xref('"
                                f"{spec}', null)")

    return xref


def _bind_lookup(ctx: BindContext, args: tuple[Any, ...]) -> Callable[..., Any]:
    name = args[1]
    if name is UNKNOWN or not isinstance(name, str):
        raise BindError("the resolver must be a literal name such as 'customer_id'", 1)
    resolver = ctx.resolvers.get(name)
    if resolver is None:
        known = sorted(ctx.resolvers)
        raise BindError(f"unknown lookup {name!r}", 1,
                        hint=closest(name, known) or
                        (f"lookups: {', '.join(known)}" if known else
                         "no lookups are configured for this bus"))
    has_default = len(args) > 2

    def lookup(value: Any, _name: Any = None, default: Any = None) -> Any:
        found = resolver(value)
        if found is not None:
            return found
        if has_default:
            return default
        raise MappingError(f"lookup {name!r} found nothing for {value!r}",
                           hint=f"give a default: lookup('{name}', null)")

    return lookup


SPECS = [
    FunctionSpec("xref", _unbound, 2, 3, "value | xref(table, default?)",
                 "Translate a value through a cross-reference table ('table' or "
                 "'table.column'); a miss is an error unless default is given.", bind=_bind_xref,
                 context_free=True),
    FunctionSpec("lookup", _unbound, 2, 3, "value | lookup(name, default?)",
                 "Look a value up with a resolver the runtime provides (e.g. the store); "
                 "a miss is an error unless default is given.", bind=_bind_lookup),
    # not context_free: the resolver is code of the runtime's (the store), run as before
    # inside the language's decimal context
]
