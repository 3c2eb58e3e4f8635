"""Expression compiler: syntax tree -> nested Python closures ``fn(cur, ctx)``.

Everything that can be decided at load is decided here: function names and arities, literal
arguments (through each function's bind hook), variables, and field names against known shapes.
The closures only read JSON values through :mod:`.context`'s primitives and call registered
functions — there is no ``eval``, no attribute access and no way to reach Python objects.
Run-time problems raise :class:`MappingError`; standard exceptions escaping a function are
translated at the one call boundary, in :mod:`.call_closures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from integration_bus.mapping import nodes as n
from integration_bus.mapping.call_closures import BoundCall, call_fn
from integration_bus.mapping.context import VARIABLES, Ctx, Fn, get_field, get_path
from integration_bus.mapping.functions import UNKNOWN, BindContext, BindError, FunctionRegistry
from integration_bus.mapping.grammar import ExpressionError, Parser
from integration_bus.mapping.ops import binary_op, concat_op, unary_op
from integration_bus.mapping.shapes import ANY, ListShape, ObjectShape, Shape
from integration_bus.mapping.values import to_text, truthy
from integration_bus.suggest import closest

__all__ = ["CompiledExpr", "ExprCompiler", "Scope"]

_TEXT: frozenset[type] = frozenset({str})
_BOOL: frozenset[type] = frozenset({bool})
_NUMBER: frozenset[type] = frozenset({Decimal})
_ARITHMETIC = ("+", "-", "*", "/", "%")


@dataclass(frozen=True, slots=True)
class Scope:
    """Shapes visible to an expression: the current scope, ``$`` and ``$input``."""

    cur: Shape = ANY
    doc: Shape = ANY
    input: Shape = ANY
    in_loop: bool = False

    def enter(self, item: Shape) -> Scope:
        return Scope(item, self.doc, self.input, True)


@dataclass(frozen=True, slots=True)
class CompiledExpr:
    """A compiled expression with what errors need: its text and its main input path."""

    fn: Fn
    text: str
    node: n.Node
    path: str | None
    relative: bool
    shape: Shape
    types: frozenset[type] | None = None
    """The types of the values it can produce, when known (``{str, NoneType}`` for
    ``name | upper``)."""


class ExprCompiler:
    """Compiles expression text against one function registry and bind context."""

    def __init__(self, registry: FunctionRegistry, bind: BindContext,
                 parser: Parser | None = None) -> None:
        self.registry = registry
        self.bind = bind
        self.parser = parser or Parser()
        self.needs_context = False
        """Whether a compiled call relies on the ambient decimal context (a function that is
        not ``context_free``); the mapping then runs inside ``localcontext(DECIMAL_CONTEXT)``."""

    def compile(self, text: str, scope: Scope) -> CompiledExpr:
        """Parse and compile; raises ExpressionError (a ConfigError with an offset)."""
        node = self.parser.parse(text)
        fn = self.node(node, scope)
        path, relative = n.primary_path(node)
        shape = self._shape(node, scope) if isinstance(node, n.Path) else ANY
        return CompiledExpr(fn, text, node, path, relative, shape, self._types(node))

    def node(self, node: n.Node, scope: Scope) -> Fn:
        if isinstance(node, n.Lit):
            value = node.value
            return lambda cur, ctx: value
        if isinstance(node, n.ListLit):
            items = tuple(self.node(item, scope) for item in node.items)
            return lambda cur, ctx: [f(cur, ctx) for f in items]
        if isinstance(node, n.Var):
            return self._var(node, scope)
        if isinstance(node, n.Path):
            self._shape(node, scope)
            return self._path(node, scope)
        if isinstance(node, n.Unary):
            return unary_op(node.op, self.node(node.operand, scope))
        if isinstance(node, n.Binary):
            left, right = self.node(node.left, scope), self.node(node.right, scope)
            if node.op == "~":
                fields = n.plain_fields(node.right)
                return concat_op(left, right, _literal_text(node.left), _literal_text(node.right),
                                 fields[0] if len(fields) == 1 else None)
            return binary_op(node.op, left, right)
        if isinstance(node, n.Logic):
            return _logic(node.op, self.node(node.left, scope), self.node(node.right, scope))
        if isinstance(node, n.Cond):
            return _cond(self.node(node.test, scope), self.node(node.then, scope),
                         self.node(node.other, scope))
        return self._call(node, scope)

    def _var(self, node: n.Var, scope: Scope) -> Fn:
        name = node.name
        if name not in VARIABLES:
            raise ExpressionError(f"unknown variable {name}", node.pos,
                                  hint=closest(name, VARIABLES) or
                                  "variables: " + ", ".join(VARIABLES))
        if name == "$index" and not scope.in_loop:
            raise ExpressionError("$index is only defined inside $each or split", node.pos)
        if name == "$":
            return lambda cur, ctx: ctx.doc
        if name == "$this":
            return lambda cur, ctx: cur
        if name == "$index":
            return lambda cur, ctx: ctx.index
        if name == "$input":
            return lambda cur, ctx: ctx.input
        return lambda cur, ctx: ctx.meta

    def _path(self, node: n.Path, scope: Scope) -> Fn:
        segments = node.segments
        base = None if node.base is None else self.node(node.base, scope)
        if all(type(s) is n.Field for s in segments):
            names = tuple(s.name for s in segments)  # type: ignore[union-attr]
            if base is None and len(names) == 1:
                (a,) = names

                def field1(cur: Any, ctx: Ctx) -> Any:
                    if type(cur) is dict:
                        return cur.get(a)
                    return get_field(cur, a)

                return field1
            if base is None and len(names) == 2:
                a, b = names

                def field2(cur: Any, ctx: Ctx) -> Any:
                    inner = cur.get(a) if type(cur) is dict else get_field(cur, a)
                    if type(inner) is dict:
                        return inner.get(b)
                    return get_field(inner, b)

                return field2
            source = base

            def fields(cur: Any, ctx: Ctx) -> Any:
                value = cur if source is None else source(cur, ctx)
                for name in names:
                    value = value.get(name) if type(value) is dict else get_field(value, name)
                return value

            return fields
        source = base
        return lambda cur, ctx: get_path(cur if source is None else source(cur, ctx), segments)

    def _types(self, node: n.Node) -> frozenset[type] | None:
        """The types ``node`` can evaluate to, or None when that is not known."""
        if isinstance(node, n.Lit):
            return frozenset({type(node.value)})
        if isinstance(node, n.Binary):
            return _TEXT if node.op == "~" else _NUMBER if node.op in _ARITHMETIC else _BOOL
        if isinstance(node, n.Logic) or (isinstance(node, n.Unary) and node.op == "not"):
            return _BOOL
        if isinstance(node, n.Unary):
            return _NUMBER
        if isinstance(node, n.Cond):
            then, other = self._types(node.then), self._types(node.other)
            return None if then is None or other is None else then | other
        if isinstance(node, n.Call):
            spec = self.registry.get(node.name)
            if spec is None or spec.returns is None:
                return None
            return frozenset({spec.returns, type(None)} if spec.null_passes else {spec.returns})
        return None

    def _shape(self, node: n.Path, scope: Scope) -> Shape:
        """Walk the path through known shapes; unknown fields of closed objects are errors."""
        if node.base is None:
            shape = scope.cur
        elif isinstance(node.base, n.Var) and node.base.name in ("$", "$input"):
            shape = scope.doc if node.base.name == "$" else scope.input
        else:
            return ANY
        for segment in node.segments:
            if isinstance(shape, ObjectShape) and isinstance(segment, n.Field):
                if segment.name in shape.fields:
                    shape = shape.fields[segment.name]
                    continue
                if shape.closed:
                    hint = closest(segment.name, shape.fields) or _fields_hint(shape)
                    if len(node.segments) == 1 and node.base is None:
                        hint += (f"; to write the text {segment.name}, quote it inside the "
                                 f"expression: \"'{segment.name}'\"")
                    raise ExpressionError(f"unknown field {segment.name!r}", node.pos, hint=hint)
                return ANY
            if isinstance(shape, ListShape) and isinstance(segment, n.Field):
                raise ExpressionError(f"{segment.name!r} is read from a list", node.pos,
                                      hint="use [*] for every item or [0] for the first")
            if isinstance(shape, ListShape):
                shape = shape.item
                if isinstance(segment, n.Wild):
                    return ANY  # a projection; its items are not tracked further
                continue
            if isinstance(shape, ObjectShape):
                raise ExpressionError("an object is indexed like a list", node.pos,
                                      hint="read a field with .name")
            return ANY
        return shape

    def _call(self, node: n.Call, scope: Scope) -> Fn:
        call, subject = self._compile_call(node, scope)
        return call_fn(call, subject)

    def _compile_call(self, node: n.Call, scope: Scope) -> tuple[BoundCall, BoundCall | None]:
        """The call, and the call its subject is when that is a call too (for pipe fusion)."""
        spec = self.registry.get(node.name)
        if spec is None:
            raise ExpressionError(f"unknown function {node.name!r}", node.pos,
                                  hint=closest(node.name, self.registry.names()) or
                                  "see docs/mapping-language.md for the function list")
        if not spec.accepts(len(node.args)):
            given = len(node.args) - 1 if node.piped else len(node.args)
            raise ExpressionError(f"{node.name}() does not take {given} argument(s)", node.pos,
                                  hint=f"usage: {spec.signature}")
        subject: BoundCall | None = None
        compiled: list[Fn] = []
        for arg in node.args:
            if not compiled and isinstance(arg, n.Call):
                subject = self._compile_call(arg, scope)[0]
                compiled.append(call_fn(subject))
            else:
                compiled.append(self.node(arg, scope))
        args = tuple(compiled)
        literals = tuple(a.value if isinstance(a, n.Lit) else UNKNOWN for a in node.args)
        impl = spec.impl
        if spec.bind is not None:
            try:
                impl = spec.bind(self.bind, literals)
            except BindError as exc:
                arg = node.args[exc.arg] if exc.arg < len(node.args) else node
                raise ExpressionError(f"{node.name}(): {exc.message}", arg.pos,
                                      hint=exc.hint or f"usage: {spec.signature}") from exc
        if not spec.context_free:
            self.needs_context = True
        consts = literals[1:] if all(v is not UNKNOWN for v in literals[1:]) else None
        call = BoundCall(node.name, impl, args, spec.null_passes, consts,
                    n.plain_fields(node.args[0]) if node.args else (),
                    spec.fast if spec.bind is None else None)
        return call, subject


def _literal_text(node: n.Node) -> str | None:
    """The text a literal contributes to ``~`` (null counts as empty text)."""
    if not isinstance(node, n.Lit):
        return None
    return "" if node.value is None else to_text(node.value)


def _fields_hint(shape: ObjectShape) -> str:
    names = sorted(shape.fields)
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"known fields: {shown}" if names else "this object has no fields"


def _logic(op: str, left: Fn, right: Fn) -> Fn:
    if op == "and":
        return lambda cur, ctx: truthy(left(cur, ctx)) and truthy(right(cur, ctx))
    return lambda cur, ctx: truthy(left(cur, ctx)) or truthy(right(cur, ctx))


def _cond(test: Fn, then: Fn, other: Fn) -> Fn:
    return lambda cur, ctx: then(cur, ctx) if truthy(test(cur, ctx)) else other(cur, ctx)
