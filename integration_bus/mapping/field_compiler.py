"""Compiling field specs (the body of ``map``, ``set`` values, ``split`` maps) into builders.

A field spec is one of::

    "expr"                      an expression
    42 / true / null            a constant (floats are refused when the file is read)
    {key: spec, "key?": spec}   a nested object; "key?" is left out when its value is null
    [spec, ...]                 a list
    {$value: spec, $when: e}    a conditional field (left out when $when is false)
    {$each: e, $map: spec, $where: e, $when: e}
                                a list built from every item of $each ($map defaults to the item)

Builders are ``fn(cur, ctx)`` closures (see :mod:`.field_closures`). When one fails, the
error gains the output field, the input path and the expression's file:line:col on its way out.

Given a conform :class:`~.conform.Plan` (the last ``map`` of a mapping gets the output's), a builder
conforms each value as it makes it, so the output needs no second pass: the result is the same as
building first and conforming the whole document afterwards.
"""

from __future__ import annotations

from typing import Any

from integration_bus.errors import MappingError
from integration_bus.mapping import nodes as n
from integration_bus.mapping.conform import PASS_THROUGH, Plan
from integration_bus.mapping.context import Ctx, Fn, note_path
from integration_bus.mapping.expr_compiler import CompiledExpr, ExprCompiler, Scope
from integration_bus.mapping.field_closures import (
    Annotate,
    Entry,
    conformed,
    each_builder,
    each_object_builder,
    list_builder,
    object_builder,
)
from integration_bus.mapping.grammar import ExpressionError
from integration_bus.mapping.shapes import ANY, ListShape, ObjectShape, Shape, item_of
from integration_bus.mapping.values import type_name
from integration_bus.suggest import closest
from integration_bus.yamlsafe import Locator

__all__ = ["DIRECTIVES", "SpecCompiler"]

DIRECTIVES = ("$value", "$when", "$each", "$map", "$where")
Loc = tuple[str | int, ...]


class SpecCompiler:
    """Compiles field specs of one mapping file, reporting errors at their file position."""

    def __init__(self, exprs: ExprCompiler, locator: Locator) -> None:
        self.exprs = exprs
        self.locator = locator

    def expr(self, text: str, loc: Loc, scope: Scope) -> tuple[CompiledExpr, Annotate]:
        """Compile ``text`` found at ``loc``.

        Returns the expression and an ``annotate(exc)`` that adds its file:line:col, text and
        input path to an error it raised (only the innermost expression annotates).
        """
        try:
            compiled = self.exprs.compile(text, scope)
        except ExpressionError as exc:
            raise self.locator.error(exc.message, loc, offset=exc.offset,
                                     hint=exc.context.get("hint")) from exc
        line, column = self.locator.position(loc).at_offset(0)
        where = {"file": self.locator.file, "line": line, "column": column, "expr": text}
        path, relative = compiled.path, compiled.relative

        def annotate(exc: MappingError) -> None:
            if "line" not in exc.context:
                exc.with_context(**where)
                note_path(exc, path, relative=relative)

        return compiled, annotate

    def located(self, text: str, loc: Loc, scope: Scope) -> tuple[CompiledExpr, Fn]:
        """Like :meth:`expr` but returns a fn that annotates its own errors (not for hot paths)."""
        compiled, annotate = self.expr(text, loc, scope)
        fn = compiled.fn

        def located_fn(cur: Any, ctx: Ctx) -> Any:
            try:
                return fn(cur, ctx)
            except MappingError as exc:
                annotate(exc)
                raise

        return compiled, located_fn

    def value(self, spec: Any, loc: Loc, scope: Scope,
              plan: Plan | None = None) -> tuple[Fn, Shape]:
        """Builder and result shape of any field spec (its values conformed by ``plan``)."""
        if isinstance(spec, str):
            compiled, fn = self.located(spec, loc, scope)
            if plan is not None and not _json_scalar(compiled):
                fn = conformed(fn, plan.conform)
            return fn, compiled.shape
        if spec is None or isinstance(spec, bool | int):
            constant = spec if plan is None else plan.conform(spec)
            return (lambda cur, ctx: constant), ANY
        if isinstance(spec, list):
            return self._list(spec, loc, scope, plan)
        if isinstance(spec, dict):
            if any(k.startswith("$") for k in spec):
                return self._directive(spec, loc, scope, plan)
            return self.object(spec, loc, scope, plan)
        raise self.locator.error(f"unsupported field spec {type_name(spec)}", loc)

    def object(self, spec: dict[str, Any], loc: Loc, scope: Scope,
               plan: Plan | None = None) -> tuple[Fn, Shape]:
        """Builder and shape of a nested object; conformed key by key when ``plan`` is given."""
        if plan is not None and not plan.builds_object():
            fn, shape = self.object(spec, loc, scope)
            return conformed(fn, plan.conform), shape
        entries, annots, shape = self._entries(spec, loc, scope, plan)
        return object_builder(entries, annots), shape

    def _entries(self, spec: dict[str, Any], loc: Loc, scope: Scope,
                 plan: Plan | None) -> tuple[list[Entry], dict[str, Annotate], Shape]:
        """The entries of an object spec, their expressions' annotators and the object's shape."""
        entries: list[Entry] = []
        annots: dict[str, Annotate] = {}
        shapes: dict[str, Shape] = {}
        for raw_key, sub in spec.items():
            key, omit = (raw_key[:-1], True) if raw_key.endswith("?") else (raw_key, False)
            if not key or key.startswith("$"):
                raise self.locator.error(f"invalid output field name {raw_key!r}", (*loc, raw_key),
                                         key=True, hint="$ keys are directives: " +
                                         ", ".join(DIRECTIVES))
            when: Fn | None = None
            if isinstance(sub, dict) and "$when" in sub:
                when = self.located(_text(self, sub["$when"], (*loc, raw_key, "$when")),
                                    (*loc, raw_key, "$when"), scope)[1]
                sub = {k: v for k, v in sub.items() if k != "$when"}
                if not sub:
                    raise self.locator.error("$when needs $value or $each beside it",
                                             (*loc, raw_key, "$when"), key=True,
                                             hint="e.g. {$when: 'note != null', $value: note}")
                if set(sub) == {"$value"}:
                    sub = sub["$value"]
            part = None if plan is None else plan.field(key)
            if isinstance(sub, str):
                compiled, annots[key] = self.expr(sub, (*loc, raw_key), scope)
                fn, shape = compiled.fn, compiled.shape
                conform = None if part is None or _json_scalar(compiled) else part.conform
                entries.append((key, fn, when, omit, conform))
            else:
                fn, shape = self.value(sub, (*loc, raw_key), scope, part)
                entries.append((key, fn, when, omit, None))
            shapes[key] = shape
        return entries, annots, ObjectShape(shapes, closed=True)

    def _list(self, spec: list[Any], loc: Loc, scope: Scope,
              plan: Plan | None) -> tuple[Fn, Shape]:
        item = None if plan is None else plan.items()
        items = tuple(self.value(sub, (*loc, i), scope, item)[0] for i, sub in enumerate(spec))
        fn = list_builder(items)
        if plan is not None and item is None:
            fn = conformed(fn, plan.conform)
        return fn, ListShape(ANY)

    def _directive(self, spec: dict[str, Any], loc: Loc, scope: Scope,
                   plan: Plan | None) -> tuple[Fn, Shape]:
        for key in spec:
            if key not in DIRECTIVES:
                if not key.startswith("$"):
                    raise self.locator.error(f"{key!r} mixed with $ directives", (*loc, key),
                                             key=True, hint="put the fields under $map or $value")
                raise self.locator.error(f"unknown directive {key!r}", (*loc, key), key=True,
                                         hint=closest(key, DIRECTIVES) or
                                         "directives: " + ", ".join(DIRECTIVES))
        if "$when" in spec:  # only reachable for a list item or a top-level value
            raise self.locator.error("$when only applies to a field of an object", (*loc, "$when"),
                                     key=True)
        if "$value" in spec:
            extra = sorted(set(spec) - {"$value"})
            if extra:
                raise self.locator.error(f"$value cannot be combined with {extra[0]}",
                                         (*loc, extra[0]), key=True,
                                         hint="use $each with $map to build a list")
            return self.value(spec["$value"], (*loc, "$value"), scope, plan)
        if "$each" not in spec:
            first = next(iter(spec))
            raise self.locator.error(f"{first} needs $each", (*loc, first), key=True,
                                     hint="e.g. {$each: line_items, $map: {sku: sku}}")
        return self._each(spec, loc, scope, plan)

    def _each(self, spec: dict[str, Any], loc: Loc, scope: Scope,
              plan: Plan | None) -> tuple[Fn, Shape]:
        """``{$each, $where?, $map?}``; an object ``$map`` is built inside the loop."""
        source_text = _text(self, spec["$each"], (*loc, "$each"))
        source, annotate = self.expr(source_text, (*loc, "$each"), scope)
        inner = scope.enter(item_of(source.shape))
        where = None
        if "$where" in spec:
            where = self.located(_text(self, spec["$where"], (*loc, "$where")), (*loc, "$where"),
                                 inner)[1]
        item = None if plan is None else plan.items()
        keys = n.plain_fields(source.node)
        source_key = keys[0] if len(keys) == 1 else None
        body_spec = spec.get("$map")
        if isinstance(body_spec, dict) and _plain_object(body_spec) and \
                (item is None or item.builds_object()):
            entries, annots, item_shape = self._entries(body_spec, (*loc, "$map"), inner, item)
            if not any(when is not None or omit for _, _, when, omit, _ in entries):
                fn = each_object_builder(source.fn, annotate, source.path, source.relative,
                                         where, entries, annots, source_key)
            else:
                fn = each_builder(source.fn, annotate, source.path, source.relative, where,
                                  object_builder(entries, annots), source_key=source_key)
        else:
            body, item_shape = (None, item_of(source.shape))
            if "$map" in spec:
                body, item_shape = self.value(body_spec, (*loc, "$map"), inner, item)
            fn = each_builder(source.fn, annotate, source.path, source.relative, where, body,
                              None if item is None else item.conform, source_key)
        if plan is not None and item is None:
            fn = conformed(fn, plan.conform)
        return fn, ListShape(item_shape)


def _json_scalar(compiled: CompiledExpr) -> bool:
    """Whether the expression only produces values every conformer passes through."""
    return compiled.types is not None and compiled.types <= PASS_THROUGH


def _plain_object(spec: dict[str, Any]) -> bool:
    """Whether ``spec`` is a nested object (not a directive)."""
    return not any(k.startswith("$") for k in spec)


def _text(compiler: SpecCompiler, value: Any, loc: Loc) -> str:
    if not isinstance(value, str):
        raise compiler.locator.error(f"expected an expression (text), got {type_name(value)}", loc)
    return value
