"""The run-time closures :mod:`.field_compiler` assembles: objects, lists and ``$each`` lists.

Each is ``fn(cur, ctx)``. A part may carry a conformer (see :mod:`.conform`): then the value is
conformed as it is built, unless it is one of the JSON scalars every conformer passes through.
When a part fails, the error gains the output field (and for ``$each`` the input path) on its way
out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from integration_bus.errors import MappingError
from integration_bus.mapping.conform import PASS_THROUGH, Conformer
from integration_bus.mapping.context import Ctx, Fn, get_field, note_field, note_path
from integration_bus.mapping.values import truthy, type_name

__all__ = [
    "Annotate", "Entry", "conformed", "each_builder", "each_object_builder", "list_builder",
    "object_builder",
]

Annotate = Callable[[MappingError], None]
Entry = tuple[str, Fn, Fn | None, bool, Conformer | None]
"""One output field: key, value, ``$when`` test, omitted when null (``key?``), conformer."""


def conformed(fn: Fn, conform: Conformer) -> Fn:
    """``fn`` with its result conformed."""
    def conformed_fn(cur: Any, ctx: Ctx) -> Any:
        value = fn(cur, ctx)
        return value if type(value) in PASS_THROUGH else conform(value)

    return conformed_fn


def object_builder(entries: Sequence[Entry], annots: dict[str, Annotate]) -> Fn:
    """An object with one key per entry (``annots`` add an expression's position to its error)."""
    if any(when is not None or omit for _, _, when, omit, _ in entries):
        return _full_object(tuple(entries), annots)
    if all(conform is None for *_, conform in entries):
        pairs = tuple((key, fn) for key, fn, *_ in entries)

        def build_plain(cur: Any, ctx: Ctx) -> dict[str, Any]:
            out = {}
            key = ""
            try:
                for key, fn in pairs:
                    out[key] = fn(cur, ctx)
            except MappingError as exc:
                _fail_entry(exc, key, annots)
                raise
            return out

        return build_plain
    triples = tuple((key, fn, conform) for key, fn, _, _, conform in entries)

    def build_conformed(cur: Any, ctx: Ctx) -> dict[str, Any]:
        out = {}
        key = ""
        try:
            for key, fn, conform in triples:
                value = fn(cur, ctx)
                if conform is not None and type(value) not in PASS_THROUGH:
                    value = conform(value)
                out[key] = value
        except MappingError as exc:
            _fail_entry(exc, key, annots)
            raise
        return out

    return build_conformed


def _fail_entry(exc: MappingError, key: str, annots: dict[str, Annotate]) -> None:
    """An error leaving the entry ``key`` of an object: its expression's position and the key."""
    annotate = annots.get(key)
    if annotate is not None:
        annotate(exc)
    note_field(exc, key)


def _full_object(entries: tuple[Entry, ...], annots: dict[str, Annotate]) -> Fn:
    def build(cur: Any, ctx: Ctx) -> dict[str, Any]:
        out = {}
        key = ""
        try:
            for key, fn, when, omit, conform in entries:
                if when is not None and not truthy(when(cur, ctx)):
                    continue
                value = fn(cur, ctx)
                if value is None and omit:
                    continue
                if conform is not None and type(value) not in PASS_THROUGH:
                    value = conform(value)
                out[key] = value
        except MappingError as exc:
            _fail_entry(exc, key, annots)
            raise
        return out

    return build


def list_builder(items: tuple[Fn, ...]) -> Fn:
    def build_list(cur: Any, ctx: Ctx) -> list[Any]:
        out = []
        for index, fn in enumerate(items):
            try:
                out.append(fn(cur, ctx))
            except MappingError as exc:
                note_field(exc, index)
                raise
        return out

    return build_list


def each_builder(source: Fn, annotate: Annotate, path: str | None, relative: bool,
                 where: Fn | None, body: Fn | None, conform: Conformer | None = None,
                 source_key: str | None = None) -> Fn:
    """A list of ``body`` applied to each item of ``source`` that passes ``where``.

    ``annotate`` adds the source expression's position to its errors; ``source_key`` names the
    field the source reads, when it is just that, to read it inline. Without a body the items are
    taken as they are, conformed with ``conform`` when given.
    """
    if body is None and conform is not None:
        body = _conform_item(conform)

    def each(cur: Any, ctx: Ctx) -> list[Any]:
        try:
            items = source(cur, ctx) if source_key is None else \
                cur.get(source_key) if type(cur) is dict else get_field(cur, source_key)
        except MappingError as exc:
            annotate(exc)
            raise
        if type(items) is not list:
            items = _not_a_list(items, path)
        saved = ctx.index
        out: list[Any] = []
        index = 0
        try:
            for index, item in enumerate(items):
                ctx.index = index
                if where is not None and not truthy(where(item, ctx)):
                    continue
                out.append(item if body is None else body(item, ctx))
        except MappingError as exc:
            note_field(exc, len(out))
            note_path(exc, f"{path}[{index}]" if path else None, relative=relative)
            raise
        finally:
            ctx.index = saved
        return out

    return each


def each_object_builder(source: Fn, annotate: Annotate, path: str | None, relative: bool,
                        where: Fn | None, entries: Sequence[Entry], annots: dict[str, Annotate],
                        source_key: str | None = None) -> Fn:
    """:func:`each_builder` with an :func:`object_builder` body (plain entries only) built in
    the same loop, which saves a call per item."""
    assert not any(when is not None or omit for _, _, when, omit, _ in entries)
    triples = tuple((key, fn, conform) for key, fn, _, _, conform in entries)

    def each_object(cur: Any, ctx: Ctx) -> list[Any]:
        try:
            items = source(cur, ctx) if source_key is None else \
                cur.get(source_key) if type(cur) is dict else get_field(cur, source_key)
        except MappingError as exc:
            annotate(exc)
            raise
        if type(items) is not list:
            items = _not_a_list(items, path)
        saved = ctx.index
        out: list[Any] = []
        index = 0
        try:
            for index, item in enumerate(items):
                ctx.index = index
                if where is not None and not truthy(where(item, ctx)):
                    continue
                row = {}
                key = ""
                try:
                    for key, fn, conform in triples:
                        value = fn(item, ctx)
                        if conform is not None and type(value) not in PASS_THROUGH:
                            value = conform(value)
                        row[key] = value
                except MappingError as exc:
                    _fail_entry(exc, key, annots)
                    raise
                out.append(row)
        except MappingError as exc:
            note_field(exc, len(out))
            note_path(exc, f"{path}[{index}]" if path else None, relative=relative)
            raise
        finally:
            ctx.index = saved
        return out

    return each_object


def _not_a_list(items: Any, path: str | None) -> list[Any]:
    """What ``$each`` makes of a source that is not a list: null is empty, else an error."""
    if items is None:
        return []
    raise MappingError(f"$each needs a list, got {type_name(items)}", path=path)


def _conform_item(conform: Conformer) -> Fn:
    def conform_item(item: Any, ctx: Ctx) -> Any:
        return item if type(item) in PASS_THROUGH else conform(item)

    return conform_item
