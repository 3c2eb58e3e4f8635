"""Compiling the ``steps:`` of a mapping file into :class:`Step` objects.

A step is one of three kinds of callable, all ``(document, ctx)``: ``apply`` returns the next
document (map, set, rename, drop, lookup, validate, jsonata, check), ``test`` says whether to keep
it (filter), ``items`` returns the documents it splits into (split). :mod:`.compiled_mapping`
chains them.
The shape of the document is tracked from step to step so field names can be checked at load.
The last step gets the output's conform plan: a ``map`` (or a ``split`` with a ``map``) then
produces conformed documents itself and the output needs no second pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydantic import BaseModel

from integration_bus.errors import ConfigError, MappingError
from integration_bus.mapping import docpath
from integration_bus.mapping import nodes as n
from integration_bus.mapping.check_failure import check_failure, figure_paths
from integration_bus.mapping.conform import Plan
from integration_bus.mapping.context import Ctx, Fn
from integration_bus.mapping.expr_compiler import Scope
from integration_bus.mapping.field_compiler import Loc, SpecCompiler
from integration_bus.mapping.functions import UNKNOWN, BindError
from integration_bus.mapping.grammar import ExpressionError
from integration_bus.mapping.jsonata_step import JsonataProgram
from integration_bus.mapping.model import (
    STEP_MODELS,
    CheckSpec,
    FilterSpec,
    JsonataSpec,
    LookupSpec,
    SplitSpec,
)
from integration_bus.mapping.shapes import ANY, ObjectShape, Shape, item_of
from integration_bus.mapping.step_closures import dropper, renamer, setter, splitter
from integration_bus.mapping.validation import SchemaStore
from integration_bus.mapping.values import to_text, truthy, type_name
from integration_bus.suggest import closest
from integration_bus.yamlmodel import validate_model

__all__ = ["Step", "StepCompiler"]

_PLANNED = ("map", "split")  # kinds that build their output and can conform it as they go


@dataclass(frozen=True, slots=True)
class Step:
    """One compiled step; exactly one of ``apply``/``test``/``items`` is set.

    ``conformed`` says that its output documents are already conformed to the mapping's output.
    """

    kind: str
    label: str
    apply: Callable[[Any, Ctx], Any] | None = None
    test: Callable[[Any, Ctx], bool] | None = None
    items: Callable[[Any, Ctx], list[Any]] | None = None
    conformed: bool = False


class StepCompiler:
    """Compiles the steps of one mapping file."""

    def __init__(self, specs: SpecCompiler, schemas: SchemaStore) -> None:
        self.specs = specs
        self.schemas = schemas
        self.locator = specs.locator
        self.used_schemas: set[str] = set()
        self.needs_context = False
        """Whether a step runs code that may rely on the ambient decimal context (schema
        validation, JSONata, a resolver)."""

    def compile(self, index: int, raw: Any, shape: Shape, input_shape: Shape,
                plan: Plan | None = None) -> tuple[Step, Shape]:
        """Compile ``steps[index]``; returns the step and the document shape after it.

        ``plan`` is given for the last step: the conform plan of the mapping's output.
        """
        loc: Loc = ("steps", index)
        kind = self._kind(raw, loc)
        model = self._parse_model(STEP_MODELS[kind], raw, loc)
        name = getattr(model, "name", None)
        label = name or f"{index + 1}:{kind}"
        body = model.body
        loc = (*loc, kind)
        scope = Scope(shape, shape, input_shape)
        method = getattr(self, f"_{kind}")
        conformed = False
        if kind in _PLANNED:
            step, after = method(body, loc, scope, plan)
            conformed = plan is not None and (kind == "map" or body.map is not None)
        else:
            step, after = method(body, loc, scope)
        apply, test, items = step
        return Step(kind, label, apply, test, items, conformed), after

    def _kind(self, raw: Any, loc: Loc) -> str:
        if not isinstance(raw, dict):
            raise self.locator.error(f"a step must be a mapping, got {type_name(raw)}", loc,
                                     hint="e.g. '- map: {...}'")
        kinds = [k for k in raw if k in STEP_MODELS]
        unknown = [k for k in raw if k not in STEP_MODELS and k != "name"]
        if unknown:
            raise self.locator.error(f"unknown step {unknown[0]!r}", (*loc, unknown[0]), key=True,
                                     hint=closest(unknown[0], STEP_MODELS) or
                                     "steps: " + ", ".join(STEP_MODELS))
        if len(kinds) != 1:
            raise self.locator.error("a step needs exactly one kind" +
                                     (f", got {' and '.join(kinds)}" if kinds else ""), loc,
                                     hint="write each step as its own list item")
        return str(kinds[0])

    def _parse_model(self, model: type[BaseModel], raw: Any, loc: Loc) -> Any:
        return validate_model(model, raw, self.locator, loc)

    # --- one method per kind: (body, loc, scope) -> ((apply, test, items), shape after) ---

    def _map(self, body: dict[str, Any], loc: Loc, scope: Scope,
             plan: Plan | None) -> tuple[tuple[Any, ...], Shape]:
        fn, shape = self.specs.object(body, loc, scope, plan)
        return (fn, None, None), shape

    def _set(self, body: dict[str, Any], loc: Loc, scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        shape = scope.cur
        updates: list[tuple[tuple[Any, ...], Fn]] = []
        for target, spec in body.items():
            segments = self._target(target, (*loc, target))
            item_shape, in_loop = docpath.scope_shape(shape, segments)
            inner = Scope(item_shape, shape, scope.input, in_loop)
            fn, value_shape = self.specs.value(spec, (*loc, target), inner)
            updates.append((segments, fn))
            shape = docpath.shape_set(shape, segments, value_shape)
        return (setter(tuple(updates)), None, None), shape

    def _rename(self, body: dict[str, str], loc: Loc,
                scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        shape = scope.cur
        renames = []
        for source, new_name in body.items():
            segments = self._target(source, (*loc, source), key=True)
            if not new_name or "." in new_name or "[" in new_name:
                raise self.locator.error(f"{new_name!r} is not a field name", (*loc, source),
                                         hint="rename gives a new name in the same object; "
                                              "use set + drop to move a field")
            self._check_exists(shape, segments, (*loc, source))
            old = segments[-1].name  # type: ignore[union-attr]
            renames.append((segments, old, new_name))
            moved = docpath.shape_at(shape, segments)
            shape = docpath.shape_set(docpath.shape_drop(shape, segments),
                                      (*segments[:-1], n.Field(new_name)), moved)
        return (renamer(tuple(renames)), None, None), shape

    def _drop(self, body: list[str], loc: Loc, scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        shape = scope.cur
        drops = []
        for i, target in enumerate(body):
            segments = self._target(target, (*loc, i))
            self._check_exists(shape, segments, (*loc, i))
            drops.append(segments)
            shape = docpath.shape_drop(shape, segments)
        return (dropper(tuple(drops)), None, None), shape

    def _filter(self, body: str | FilterSpec, loc: Loc,
                scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        text, where = (body, loc) if isinstance(body, str) else (body.when, (*loc, "when"))
        fn = self.specs.located(text, where, scope)[1]
        return (None, lambda doc, ctx: truthy(fn(doc, ctx)), None), scope.cur

    def _split(self, body: SplitSpec, loc: Loc, scope: Scope,
               plan: Plan | None) -> tuple[tuple[Any, ...], Shape]:
        source, source_fn = self.specs.located(body.each, (*loc, "each"), scope)
        item_shape = item_of(source.shape)
        mapper: Fn | None = None
        if body.map is not None:
            mapper, item_shape = self.specs.value(body.map, (*loc, "map"),
                                                  scope.enter(item_shape), plan)
        return (None, None, splitter(source_fn, mapper)), item_shape

    def _lookup(self, body: LookupSpec, loc: Loc, scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        segments = self._target(body.into, (*loc, "into"))
        if (body.table is None) == (body.resolver is None):
            raise self.locator.error("lookup needs either table or resolver", loc,
                                     hint="table: NAME for mappings/xref/NAME.csv, resolver: NAME "
                                          "for a lookup the runtime provides")
        if body.resolver is not None and body.column is not None:
            raise self.locator.error("column only applies to a table", (*loc, "column"), key=True)
        item_shape, in_loop = docpath.scope_shape(scope.cur, segments)
        key = self.specs.located(body.key, (*loc, "key"),
                                 Scope(item_shape, scope.cur, scope.input, in_loop))[1]
        function = "xref" if body.table is not None else "lookup"
        target = body.table if body.table is not None else body.resolver
        if body.column:
            target = f"{target}.{body.column}"
        has_default = "default" in body.model_fields_set
        args = (UNKNOWN, target, body.default) if has_default else (UNKNOWN, target)
        spec = self.specs.exprs.registry.get(function)
        assert spec is not None and spec.bind is not None
        if not spec.context_free:
            self.needs_context = True
        try:
            impl = spec.bind(self.specs.exprs.bind, args)
        except BindError as exc:
            field = "table" if body.table is not None else "resolver"
            raise self.locator.error(exc.message, (*loc, field), hint=exc.hint) from exc
        default = body.default

        def value(cur: Any, ctx: Ctx) -> Any:
            found = key(cur, ctx)
            return None if found is None else impl(found, target, default)

        shape = docpath.shape_set(scope.cur, segments, ANY)
        return (setter(((segments, value),)), None, None), shape

    def _validate(self, body: Any, loc: Loc, scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        ref = body if isinstance(body, str) else body.schema_
        where = loc if isinstance(body, str) else (*loc, "schema")
        try:
            schema = self.schemas.get(ref)
        except ConfigError as exc:
            if exc.context.get("file"):
                raise
            raise self.locator.error(exc.message, where, hint=exc.context.get("hint")) from exc
        self.used_schemas.add(ref)
        self.needs_context = True  # validators may compute with Decimals (multipleOf)

        def validate(doc: Any, ctx: Ctx) -> Any:
            conformed = schema.conform(doc)
            schema.validate(conformed)
            return conformed

        return (validate, None, None), schema.shape

    def _check(self, body: str | CheckSpec, loc: Loc,
               scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        spec = CheckSpec(that=body) if isinstance(body, str) else body
        that_loc = loc if isinstance(body, str) else (*loc, "that")
        each: Fn | None = None
        inner = scope
        if spec.each is not None:
            source, each = self.specs.located(spec.each, (*loc, "each"), scope)
            inner = scope.enter(item_of(source.shape))
        rule, that = self.specs.located(spec.that, that_loc, inner)
        message = None if spec.message is None else \
            self.specs.located(spec.message, (*loc, "message"), inner)[1]
        figures = [(label, self.specs.exprs.node(path, inner))
                   for label, path in figure_paths(rule.node)]
        position = self.locator.position(that_loc)
        where = {"file": self.locator.file, "line": position.line, "column": position.column}
        what = spec.each

        def check_one(item: Any, ctx: Ctx, index: int | None) -> None:
            if truthy(that(item, ctx)):
                return
            text = None if message is None else to_text(message(item, ctx), "check message")
            error = check_failure(spec.that, text, [
                (label, partial(fn, item, ctx)) for label, fn in figures])
            raise error.with_context(field=None if index is None else f"{what}[{index}]",
                                     **where)

        def check(doc: Any, ctx: Ctx) -> Any:
            if each is None:
                check_one(doc, ctx, None)
                return doc
            items = each(doc, ctx)
            if items is None:
                return doc
            if type(items) is not list:
                raise MappingError(f"check each needs a list, got {type_name(items)}",
                                   field=what)
            saved = ctx.index
            try:
                for index, item in enumerate(items):
                    ctx.index = index
                    check_one(item, ctx, index)
            finally:
                ctx.index = saved
            return doc

        return (check, None, None), scope.cur

    def _jsonata(self, body: str | JsonataSpec, loc: Loc,
                 scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        self.needs_context = True
        spec = JsonataSpec(expression=body) if isinstance(body, str) else body
        where = loc if isinstance(body, str) else (*loc, "expression")
        pos = self.locator.position(where)
        program = JsonataProgram(spec.expression, timeout_ms=spec.timeout_ms,
                                 max_depth=spec.max_depth, file=self.locator.file, line=pos.line,
                                 column=pos.column)
        return (lambda doc, ctx: program(doc), None, None), ANY

    def _target(self, text: str, loc: Loc, key: bool = True) -> tuple[n.Field | n.Wild, ...]:
        try:
            return docpath.parse_target(self.specs.exprs.parser, text)
        except ExpressionError as exc:
            raise self.locator.error(f"target {text!r}: {exc.message}", loc, key=key,
                                     hint=exc.context.get("hint")) from exc

    def _check_exists(self, shape: Shape, segments: tuple[Any, ...], loc: Loc) -> None:
        parent = docpath.shape_at(shape, segments[:-1])
        name = segments[-1].name
        if isinstance(parent, ObjectShape) and parent.closed and name not in parent.fields:
            raise self.locator.error(f"unknown field {name!r}", loc, key=True,
                                     hint=closest(name, parent.fields))
