"""Run-time closures of the ``set``, ``rename``, ``drop`` and ``split`` steps.

Each is ``fn(document, ctx)``. Updates copy the containers on the way to a target instead of
changing the document in place (see :func:`.docpath.update`), so an input is never modified.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from integration_bus.errors import MappingError
from integration_bus.mapping import docpath
from integration_bus.mapping.context import Ctx, Fn
from integration_bus.mapping.values import type_name

__all__ = ["dropper", "renamer", "setter", "splitter"]


def setter(updates: tuple[tuple[tuple[Any, ...], Fn], ...]) -> Callable[[Any, Ctx], Any]:
    def set_fields(doc: Any, ctx: Ctx) -> Any:
        for segments, fn in updates:
            name = segments[-1].name

            def leaf(obj: dict[str, Any], scope: Any, fn: Fn = fn, name: str = name) -> None:
                obj[name] = fn(scope, ctx)

            doc = docpath.update(doc, segments, leaf, doc, ctx, create=True)
            ctx.doc = doc
        return doc

    return set_fields


def renamer(renames: tuple[tuple[Any, str, str], ...]) -> Callable[[Any, Ctx], Any]:
    def rename(doc: Any, ctx: Ctx) -> Any:
        for segments, old, new in renames:
            def leaf(obj: dict[str, Any], scope: Any, old: str = old, new: str = new) -> None:
                if old in obj:
                    obj[new] = obj.pop(old)

            doc = docpath.update(doc, segments, leaf, doc, ctx, create=False)
        return doc

    return rename


def dropper(drops: tuple[tuple[Any, ...], ...]) -> Callable[[Any, Ctx], Any]:
    def drop(doc: Any, ctx: Ctx) -> Any:
        for segments in drops:
            def leaf(obj: dict[str, Any], scope: Any, name: str = segments[-1].name) -> None:
                obj.pop(name, None)

            doc = docpath.update(doc, segments, leaf, doc, ctx, create=False)
        return doc

    return drop


def splitter(source: Fn, mapper: Fn | None) -> Callable[[Any, Ctx], list[Any]]:
    def split(doc: Any, ctx: Ctx) -> list[Any]:
        items = source(doc, ctx)
        if items is None:
            return []
        if type(items) is not list:
            raise MappingError(f"split needs a list, got {type_name(items)}")
        if mapper is None:
            return list(items)
        out = []
        saved = ctx.index
        try:
            for index, item in enumerate(items):
                ctx.index = index
                ctx.doc = doc
                out.append(mapper(item, ctx))
        except MappingError as exc:
            exc.context.setdefault("field", f"[{index}]")
            raise
        finally:
            ctx.index = saved
        return out

    return split
