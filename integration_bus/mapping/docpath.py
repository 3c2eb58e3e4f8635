"""Target paths of ``set``/``rename``/``drop``/``lookup``: ``a.b``, ``lines[*].total``.

Updates are copy-on-write: every object and list on the way to the target is copied, so the input
payload (shared with the input envelope) is never modified.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from integration_bus.errors import MappingError
from integration_bus.mapping import nodes as n
from integration_bus.mapping.context import Ctx
from integration_bus.mapping.grammar import ExpressionError, Parser
from integration_bus.mapping.shapes import ANY, ListShape, ObjectShape, Shape
from integration_bus.mapping.values import type_name

__all__ = ["Leaf", "parse_target", "shape_drop", "shape_set", "update"]

Leaf = Callable[[dict[str, Any], Any], None]
"""Changes the (already copied) parent object in place; gets the scope (item or document)."""


def parse_target(parser: Parser, text: str) -> tuple[n.Field | n.Wild, ...]:
    """Segments of a target path; raises ExpressionError unless it is fields and ``[*]`` only,
    ending in a field."""
    node = parser.parse(text)
    if not isinstance(node, n.Path) or node.base is not None:
        raise ExpressionError(f"{text!r} is not a field path", 0,
                              hint="write a path such as customer.email or lines[*].total")
    segments: list[n.Field | n.Wild] = []
    for segment in node.segments:
        if isinstance(segment, n.Index):
            raise ExpressionError("a target path cannot use [n]", 0,
                                  hint="use [*] to change every item")
        segments.append(segment)
    if not isinstance(segments[-1], n.Field):
        raise ExpressionError("a target path must end in a field name", 0)
    return tuple(segments)


def update(value: Any, segments: tuple[n.Field | n.Wild, ...], leaf: Leaf, scope: Any,
           ctx: Ctx, *, create: bool) -> Any:
    """Copy of ``value`` with ``leaf`` applied to the parent of the last segment.

    Missing objects on the way are created when ``create`` (set), else left alone (drop, rename).
    """
    if len(segments) == 1:
        if value is None and create:
            value = {}
        if type(value) is dict:
            copy = dict(value)
            leaf(copy, scope)
            return copy
        if value is None:
            return None
        raise MappingError(f"cannot change a field of a {type_name(value)}")
    head, rest = segments[0], segments[1:]
    if isinstance(head, n.Wild):
        if value is None:
            return None
        if type(value) is not list:
            raise MappingError(f"[*] needs a list, got {type_name(value)}")
        saved = ctx.index
        try:
            out = []
            for index, item in enumerate(value):
                ctx.index = index
                out.append(update(item, rest, leaf, item, ctx, create=create))
            return out
        finally:
            ctx.index = saved
    if value is None:
        if not create:
            return None
        value = {}
    if type(value) is not dict:
        raise MappingError(f"cannot read field {head.name!r} of a {type_name(value)}")
    inner = value.get(head.name)
    if inner is None and not create:
        return value
    copy = dict(value)
    copy[head.name] = update(inner, rest, leaf, scope, ctx, create=create)
    return copy


def shape_set(shape: Shape, segments: tuple[n.Field | n.Wild, ...], new: Shape) -> Shape:
    """The shape after setting the target to a value of shape ``new``."""
    head, rest = segments[0], segments[1:]
    if isinstance(head, n.Wild):
        if isinstance(shape, ListShape):
            return ListShape(shape_set(shape.item, rest, new))
        return shape
    if not isinstance(shape, ObjectShape):
        return shape
    fields = dict(shape.fields)
    fields[head.name] = new if not rest else \
        shape_set(fields.get(head.name, ObjectShape()), rest, new)
    return ObjectShape(fields, shape.closed)


def shape_drop(shape: Shape, segments: tuple[n.Field | n.Wild, ...]) -> Shape:
    """The shape after removing the target."""
    head, rest = segments[0], segments[1:]
    if isinstance(head, n.Wild):
        return ListShape(shape_drop(shape.item, rest)) if isinstance(shape, ListShape) else shape
    if not isinstance(shape, ObjectShape) or head.name not in shape.fields:
        return shape
    fields = dict(shape.fields)
    if rest:
        fields[head.name] = shape_drop(fields[head.name], rest)
    else:
        del fields[head.name]
    return ObjectShape(fields, shape.closed)


def shape_at(shape: Shape, segments: tuple[n.Field | n.Wild, ...]) -> Shape:
    """Shape of the target (ANY when unknown)."""
    for segment in segments:
        if isinstance(segment, n.Wild):
            shape = shape.item if isinstance(shape, ListShape) else ANY
        elif isinstance(shape, ObjectShape):
            shape = shape.fields.get(segment.name, ANY)
        else:
            return ANY
    return shape


def scope_shape(shape: Shape, segments: tuple[n.Field | n.Wild, ...]) -> tuple[Shape, bool]:
    """Shape of the scope a ``set`` value is evaluated in (the innermost ``[*]`` item, else the
    document), and whether that scope is a list item."""
    scope, in_loop = shape, False
    current = shape
    for segment in segments[:-1]:
        if isinstance(segment, n.Wild):
            current = current.item if isinstance(current, ListShape) else ANY
            scope, in_loop = current, True
        else:
            current = current.fields.get(segment.name, ANY) if isinstance(current, ObjectShape) \
                else ANY
    return scope, in_loop
