"""Compiling field specs (the body of ``map``, ``set`` values, ``split`` maps) into builders.

A field spec is one of::

    "expr"                      an expression
    42 / true / null            a constant (floats are refused when the file is read)
    {key: spec, "key?": spec}   a nested object; "key?" is left out when its value is null
    [spec, ...]                 a list
    {$value: spec, $when: e}    a conditional field (left out when $when is false)
    {$each: e, $map: spec, $where: e, $when: e}
                                a list built from every item of $each ($map defaults to the item)

Builders are ``fn(cur, ctx)`` closures. When one fails, the error gains the output field, the
input path and the expression's file:line:col on its way out (see :mod:`.runtime`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from integration_bus.errors import MappingError
from integration_bus.mapping.compiler import CompiledExpr, ExprCompiler, Scope
from integration_bus.mapping.grammar import ExpressionError
from integration_bus.mapping.runtime import Ctx, Fn, note_field, note_path
from integration_bus.mapping.shapes import ANY, ListShape, ObjectShape, Shape, item_of
from integration_bus.mapping.suggest import did_you_mean
from integration_bus.mapping.values import truthy, type_name
from integration_bus.mapping.yamlsrc import Locator

__all__ = ["DIRECTIVES", "SpecCompiler"]

DIRECTIVES = ("$value", "$when", "$each", "$map", "$where")
Loc = tuple[str | int, ...]
Annotate = Callable[[MappingError], None]


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

    def value(self, spec: Any, loc: Loc, scope: Scope) -> tuple[Fn, Shape]:
        """Builder and result shape of any field spec."""
        if isinstance(spec, str):
            compiled, fn = self.located(spec, loc, scope)
            return fn, compiled.shape
        if spec is None or isinstance(spec, bool | int):
            constant = spec
            return (lambda cur, ctx: constant), ANY
        if isinstance(spec, list):
            return self._list(spec, loc, scope)
        if isinstance(spec, dict):
            if any(k.startswith("$") for k in spec):
                return self._directive(spec, loc, scope)
            return self.object(spec, loc, scope)
        raise self.locator.error(f"unsupported field spec {type_name(spec)}", loc)

    def object(self, spec: dict[str, Any], loc: Loc, scope: Scope) -> tuple[Fn, Shape]:
        entries: list[tuple[str, Fn, Fn | None, bool]] = []
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
            if isinstance(sub, str):
                compiled, annots[key] = self.expr(sub, (*loc, raw_key), scope)
                fn, shape = compiled.fn, compiled.shape
            else:
                fn, shape = self.value(sub, (*loc, raw_key), scope)
            entries.append((key, fn, when, omit))
            shapes[key] = shape
        return _object_builder(tuple(entries), annots), ObjectShape(shapes, closed=True)

    def _list(self, spec: list[Any], loc: Loc, scope: Scope) -> tuple[Fn, Shape]:
        items = tuple(self.value(sub, (*loc, i), scope)[0] for i, sub in enumerate(spec))

        def build_list(cur: Any, ctx: Ctx) -> list[Any]:
            out = []
            for index, fn in enumerate(items):
                try:
                    out.append(fn(cur, ctx))
                except MappingError as exc:
                    note_field(exc, index)
                    raise
            return out

        return build_list, ListShape(ANY)

    def _directive(self, spec: dict[str, Any], loc: Loc, scope: Scope) -> tuple[Fn, Shape]:
        for key in spec:
            if key not in DIRECTIVES:
                if not key.startswith("$"):
                    raise self.locator.error(f"{key!r} mixed with $ directives", (*loc, key),
                                             key=True, hint="put the fields under $map or $value")
                raise self.locator.error(f"unknown directive {key!r}", (*loc, key), key=True,
                                         hint=did_you_mean(key, DIRECTIVES) or
                                         "directives: " + ", ".join(DIRECTIVES))
        if "$when" in spec:  # only reachable for a list item or a top-level value
            raise self.locator.error("$when only applies to a field of an object", (*loc, "$when"),
                                     key=True)
        if "$value" in spec:
            extra = sorted(set(spec) - {"$value"})
            if extra:
                raise self.locator.error(f"$value cannot be combined with {extra[0]}", (*loc, extra[0]),
                                         key=True, hint="use $each with $map to build a list")
            return self.value(spec["$value"], (*loc, "$value"), scope)
        if "$each" not in spec:
            first = next(iter(spec))
            raise self.locator.error(f"{first} needs $each", (*loc, first), key=True,
                                     hint="e.g. {$each: line_items, $map: {sku: sku}}")
        source_text = _text(self, spec["$each"], (*loc, "$each"))
        source, source_fn = self.located(source_text, (*loc, "$each"), scope)
        inner = scope.enter(item_of(source.shape))
        where = None
        if "$where" in spec:
            where = self.located(_text(self, spec["$where"], (*loc, "$where")), (*loc, "$where"),
                                 inner)[1]
        body, item_shape = (None, item_of(source.shape))
        if "$map" in spec:
            body, item_shape = self.value(spec["$map"], (*loc, "$map"), inner)
        return _each_builder(source_fn, source.path, source.relative, where, body), \
            ListShape(item_shape)


def _text(compiler: SpecCompiler, value: Any, loc: Loc) -> str:
    if not isinstance(value, str):
        raise compiler.locator.error(f"expected an expression (text), got {type_name(value)}", loc)
    return value


def _object_builder(entries: Sequence[tuple[str, Fn, Fn | None, bool]],
                    annots: dict[str, Annotate]) -> Fn:
    if all(when is None and not omit for _, _, when, omit in entries):
        pairs = tuple((key, fn) for key, fn, _, _ in entries)

        def build_plain(cur: Any, ctx: Ctx) -> dict[str, Any]:
            out = {}
            key = ""
            try:
                for key, fn in pairs:
                    out[key] = fn(cur, ctx)
            except MappingError as exc:
                annotate = annots.get(key)
                if annotate is not None:
                    annotate(exc)
                note_field(exc, key)
                raise
            return out

        return build_plain
    full = tuple(entries)

    def build(cur: Any, ctx: Ctx) -> dict[str, Any]:
        out = {}
        key = ""
        try:
            for key, fn, when, omit in full:
                if when is not None and not truthy(when(cur, ctx)):
                    continue
                value = fn(cur, ctx)
                if value is None and omit:
                    continue
                out[key] = value
        except MappingError as exc:
            annotate = annots.get(key)
            if annotate is not None:
                annotate(exc)
            note_field(exc, key)
            raise
        return out

    return build


def _each_builder(source: Fn, path: str | None, relative: bool, where: Fn | None,
                  body: Fn | None) -> Fn:
    def each(cur: Any, ctx: Ctx) -> list[Any]:
        items = source(cur, ctx)
        if items is None:
            return []
        if type(items) is not list:
            raise MappingError(f"$each needs a list, got {type_name(items)}", path=path)
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
