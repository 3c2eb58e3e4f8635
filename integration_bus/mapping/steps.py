"""Compiling the ``steps:`` of a mapping file into :class:`Step` objects.

A step is one of three kinds of callable, all ``(document, ctx)``: ``apply`` returns the next
document (map, set, rename, drop, lookup, validate, jsonata), ``test`` says whether to keep it
(filter), ``items`` returns the documents it splits into (split). :mod:`.compiled` chains them.
The shape of the document is tracked from step to step so field names can be checked at load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from integration_bus.errors import ConfigError, MappingError
from integration_bus.mapping import docpath
from integration_bus.mapping import nodes as n
from integration_bus.mapping.compiler import Scope
from integration_bus.mapping.functions import UNKNOWN, BindError
from integration_bus.mapping.grammar import ExpressionError
from integration_bus.mapping.jsonata_step import JsonataProgram
from integration_bus.mapping.mapbuild import Loc, SpecCompiler
from integration_bus.mapping.model import (
    STEP_MODELS,
    FilterSpec,
    JsonataSpec,
    LookupSpec,
    SplitSpec,
)
from integration_bus.mapping.runtime import Ctx, Fn
from integration_bus.mapping.shapes import ANY, ObjectShape, Shape, item_of
from integration_bus.mapping.suggest import did_you_mean
from integration_bus.mapping.validation import SchemaStore
from integration_bus.mapping.values import truthy, type_name
from integration_bus.mapping.yamlsrc import Locator

__all__ = ["Step", "StepCompiler", "pydantic_error"]


@dataclass(frozen=True, slots=True)
class Step:
    """One compiled step; exactly one of ``apply``/``test``/``items`` is set."""

    kind: str
    label: str
    apply: Callable[[Any, Ctx], Any] | None = None
    test: Callable[[Any, Ctx], bool] | None = None
    items: Callable[[Any, Ctx], list[Any]] | None = None


class StepCompiler:
    """Compiles the steps of one mapping file."""

    def __init__(self, specs: SpecCompiler, schemas: SchemaStore) -> None:
        self.specs = specs
        self.schemas = schemas
        self.locator = specs.locator
        self.used_schemas: set[str] = set()

    def compile(self, index: int, raw: Any, shape: Shape, input_shape: Shape) -> tuple[Step, Shape]:
        """Compile ``steps[index]``; returns the step and the document shape after it."""
        loc: Loc = ("steps", index)
        kind = self._kind(raw, loc)
        model = self._parse_model(STEP_MODELS[kind], raw, loc)
        name = getattr(model, "name", None)
        label = name or f"{index + 1}:{kind}"
        body = model.body
        loc = (*loc, kind)
        scope = Scope(shape, shape, input_shape)
        method = getattr(self, f"_{kind}")
        step, after = method(body, loc, scope)
        return Step(kind, label, *step), after

    def _kind(self, raw: Any, loc: Loc) -> str:
        if not isinstance(raw, dict):
            raise self.locator.error(f"a step must be a mapping, got {type_name(raw)}", loc,
                                     hint="e.g. '- map: {...}'")
        kinds = [k for k in raw if k in STEP_MODELS]
        unknown = [k for k in raw if k not in STEP_MODELS and k != "name"]
        if unknown:
            raise self.locator.error(f"unknown step {unknown[0]!r}", (*loc, unknown[0]), key=True,
                                     hint=did_you_mean(unknown[0], STEP_MODELS) or
                                     "steps: " + ", ".join(STEP_MODELS))
        if len(kinds) != 1:
            raise self.locator.error("a step needs exactly one kind" +
                                     (f", got {' and '.join(kinds)}" if kinds else ""), loc,
                                     hint="write each step as its own list item")
        return str(kinds[0])

    def _parse_model(self, model: type[BaseModel], raw: Any, loc: Loc) -> Any:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            raise pydantic_error(exc, self.locator, loc, raw, model) from exc

    # --- one method per kind: (body, loc, scope) -> ((apply, test, items), shape after) ---

    def _map(self, body: dict[str, Any], loc: Loc, scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        fn, shape = self.specs.object(body, loc, scope)
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
        return (_setter(tuple(updates)), None, None), shape

    def _rename(self, body: dict[str, str], loc: Loc, scope: Scope) -> tuple[tuple[Any, ...], Shape]:
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
        return (_renamer(tuple(renames)), None, None), shape

    def _drop(self, body: list[str], loc: Loc, scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        shape = scope.cur
        drops = []
        for i, target in enumerate(body):
            segments = self._target(target, (*loc, i))
            self._check_exists(shape, segments, (*loc, i))
            drops.append(segments)
            shape = docpath.shape_drop(shape, segments)
        return (_dropper(tuple(drops)), None, None), shape

    def _filter(self, body: str | FilterSpec, loc: Loc, scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        text, where = (body, loc) if isinstance(body, str) else (body.when, (*loc, "when"))
        fn = self.specs.located(text, where, scope)[1]
        return (None, lambda doc, ctx: truthy(fn(doc, ctx)), None), scope.cur

    def _split(self, body: SplitSpec, loc: Loc, scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        source, source_fn = self.specs.located(body.each, (*loc, "each"), scope)
        item_shape = item_of(source.shape)
        mapper: Fn | None = None
        if body.map is not None:
            mapper, item_shape = self.specs.value(body.map, (*loc, "map"), scope.enter(item_shape))
        return (None, None, _splitter(source_fn, mapper)), item_shape

    def _lookup(self, body: LookupSpec, loc: Loc, scope: Scope) -> tuple[tuple[Any, ...], Shape]:
        segments = self._target(body.into, (*loc, "into"))
        if (body.table is None) == (body.resolver is None):
            raise self.locator.error("lookup needs either table or resolver", loc,
                                     hint="table: NAME for mappings/xref/NAME.csv, resolver: NAME "
                                          "for a lookup the runtime provides")
        if body.resolver is not None and body.column is not None:
            raise self.locator.error("column only applies to a table", (*loc, "column"), key=True)
        item_shape, in_loop = docpath.scope_shape(scope.cur, segments)
        key = self.specs.located(body.key, (*loc, "key"), Scope(item_shape, scope.cur, scope.input,
                                                                   in_loop))[1]
        function = "xref" if body.table is not None else "lookup"
        target = body.table if body.table is not None else body.resolver
        if body.column:
            target = f"{target}.{body.column}"
        has_default = "default" in body.model_fields_set
        args = (UNKNOWN, target, body.default) if has_default else (UNKNOWN, target)
        spec = self.specs.exprs.registry.get(function)
        assert spec is not None and spec.bind is not None
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
        return (_setter(((segments, value),)), None, None), shape

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

        def validate(doc: Any, ctx: Ctx) -> Any:
            conformed = schema.conform(doc)
            schema.validate(conformed)
            return conformed

        return (validate, None, None), schema.shape

    def _jsonata(self, body: str | JsonataSpec, loc: Loc, scope: Scope) -> tuple[tuple[Any, ...], Shape]:
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
                                     hint=did_you_mean(name, parent.fields))


def _setter(updates: tuple[tuple[tuple[Any, ...], Fn], ...]) -> Callable[[Any, Ctx], Any]:
    def set_fields(doc: Any, ctx: Ctx) -> Any:
        for segments, fn in updates:
            name = segments[-1].name

            def leaf(obj: dict[str, Any], scope: Any, fn: Fn = fn, name: str = name) -> None:
                obj[name] = fn(scope, ctx)

            doc = docpath.update(doc, segments, leaf, doc, ctx, create=True)
            ctx.doc = doc
        return doc

    return set_fields


def _renamer(renames: tuple[tuple[Any, str, str], ...]) -> Callable[[Any, Ctx], Any]:
    def rename(doc: Any, ctx: Ctx) -> Any:
        for segments, old, new in renames:
            def leaf(obj: dict[str, Any], scope: Any, old: str = old, new: str = new) -> None:
                if old in obj:
                    obj[new] = obj.pop(old)

            doc = docpath.update(doc, segments, leaf, doc, ctx, create=False)
        return doc

    return rename


def _dropper(drops: tuple[tuple[Any, ...], ...]) -> Callable[[Any, Ctx], Any]:
    def drop(doc: Any, ctx: Ctx) -> Any:
        for segments in drops:
            def leaf(obj: dict[str, Any], scope: Any, name: str = segments[-1].name) -> None:
                obj.pop(name, None)

            doc = docpath.update(doc, segments, leaf, doc, ctx, create=False)
        return doc

    return drop


def _splitter(source: Fn, mapper: Fn | None) -> Callable[[Any, Ctx], list[Any]]:
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


def pydantic_error(exc: ValidationError, locator: Locator, prefix: Loc, data: Any,
                   model: type[BaseModel]) -> ConfigError:
    """The first pydantic error as a located ConfigError (with did-you-mean for unknown keys)."""
    errors = exc.errors()
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc: list[str | int] = []
    node = data
    for part in error["loc"]:
        if (isinstance(node, dict) and part in node) or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            loc.append(part)
            node = node[part]
    kind = error["type"]
    path = (*prefix, *loc)
    if kind == "extra_forbidden":
        bad = str(loc[-1]) if loc else "?"
        allowed = _keys_at(model, loc[:-1])
        return locator.error(f"unknown key {bad!r}", path, key=True,
                             hint=did_you_mean(bad, allowed) or
                             ("keys: " + ", ".join(sorted(allowed)) if allowed else None))
    if kind == "missing":
        return locator.error(f"missing key {error['loc'][-1]!r}", path, key=bool(loc))
    return locator.error(error["msg"], path)


def _keys_at(model: type[BaseModel], loc: list[str | int]) -> list[str]:
    """Keys allowed at ``loc`` inside ``model`` (following model, list and optional fields)."""
    current: Any = model
    for part in loc:
        current = _model_of(current)
        if current is None:
            return []
        if isinstance(part, int):
            continue
        fields = {f.alias or name: f for name, f in current.model_fields.items()}
        if part not in fields:
            return []
        current = fields[part].annotation
    found = _model_of(current)
    return [] if found is None else [f.alias or name for name, f in found.model_fields.items()]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``X | None`` or ``list[X]``."""
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
