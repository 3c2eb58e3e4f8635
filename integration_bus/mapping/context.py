"""Per-call state and the value-access primitives that compiled code and the reference share.

:class:`Ctx` is created for every envelope (never shared between calls or threads); compiled
expressions are ``fn(cur, ctx)`` where ``cur`` is the current scope (the document, or the item of an
``$each``/``split``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from integration_bus.errors import MappingError
from integration_bus.mapping import nodes as n
from integration_bus.mapping.values import type_name

__all__ = [
    "VARIABLES", "Ctx", "Fn", "get_field", "get_index", "get_path", "get_wild", "note_field",
    "note_path",
]

VARIABLES = ("$", "$this", "$index", "$input", "$meta")


class Ctx:
    """State of one mapping call: the step's document, the original input and envelope facts."""

    __slots__ = ("doc", "index", "input", "meta", "out")

    def __init__(self, doc: Any, meta: dict[str, Any] | None = None) -> None:
        self.doc = doc
        self.input = doc
        self.index: int | None = None
        self.meta: dict[str, Any] = meta if meta is not None else {}
        self.out: list[tuple[str, Any]] = []


Fn = Callable[[Any, Ctx], Any]


def get_field(value: Any, name: str) -> Any:
    """``value.name``: a key of an object; null stays null, a missing key is null."""
    if type(value) is dict:
        return value.get(name)
    if value is None:
        return None
    hint = "use [*] for every item or [0] for the first" if isinstance(value, list) else None
    raise MappingError(f"cannot read field {name!r} of a {type_name(value)}", hint=hint)


def get_index(value: Any, index: int) -> Any:
    """``value[index]``: an item of a list (null when out of range or when value is null)."""
    if type(value) is list:
        if -len(value) <= index < len(value):
            return value[index]
        return None
    if value is None:
        return None
    raise MappingError(f"cannot take item [{index}] of a {type_name(value)}")


def get_wild(value: Any) -> list[Any]:
    """``value[*]``: the items of a list (null counts as an empty list)."""
    if type(value) is list:
        return value
    if value is None:
        return []
    raise MappingError(f"cannot take every item [*] of a {type_name(value)}")


def get_path(value: Any, segments: tuple[n.Segment, ...]) -> Any:
    """Apply ``segments`` to ``value``; after ``[*]`` the rest is applied to every item and a
    further ``[*]`` flattens one level."""
    for position, segment in enumerate(segments):
        if type(segment) is n.Field:
            value = get_field(value, segment.name)
        elif type(segment) is n.Index:
            value = get_index(value, segment.index)
        else:
            rest = segments[position + 1:]
            items = get_wild(value)
            if not rest:
                return list(items)
            if any(type(s) is n.Wild for s in rest):
                out: list[Any] = []
                for item in items:
                    out.extend(get_path(item, rest))
                return out
            return [get_path(item, rest) for item in items]
    return value


def _join(prefix: str, inner: str | None) -> str:
    if not inner:
        return prefix
    return prefix + inner if inner.startswith("[") else f"{prefix}.{inner}"


def note_field(exc: MappingError, key: str | int) -> MappingError:
    """Prefix the output field of an error with ``key`` as it leaves an object or list."""
    label = f"[{key}]" if isinstance(key, int) else key
    exc.context["field"] = _join(label, exc.context.get("field"))
    return exc


def note_path(exc: MappingError, path: str | None, *, relative: bool) -> MappingError:
    """Prefix the input path of an error as it leaves a scope.

    The innermost expression passes its own path (``quantity``); each enclosing ``$each`` passes
    ``line_items[2]``. ``relative=False`` (a path from ``$`` or ``$input``, or no path at all)
    stops further prefixing, so the final error names the full input path.
    """
    if not getattr(exc, "_mapping_path_open", True):
        return exc
    if path is None:
        exc._mapping_path_open = False  # type: ignore[attr-defined]
        return exc
    exc.context["path"] = _join(path, exc.context.get("path"))
    if not relative:
        exc._mapping_path_open = False  # type: ignore[attr-defined]
    return exc
