"""What the compiler knows about the shape of a document, for field checks at load.

A shape comes from a JSON Schema (the mapping's input schema, a ``validate`` step) or from a ``map``
step (its output keys). When a field read in an expression is not in a known, closed object shape
the loader reports it with did-you-mean. Anything not known is :data:`ANY` and is not checked.

A schema object is *closed* for this check unless it says ``additionalProperties`` (other than
``false``) or ``patternProperties``: the input schema lists what a mapping may read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ANY", "AnyShape", "ListShape", "ObjectShape", "Shape", "from_schema", "item_of"]


@dataclass(frozen=True, slots=True)
class AnyShape:
    """Nothing is known."""


@dataclass(frozen=True, slots=True)
class ObjectShape:
    fields: Mapping[str, Shape] = field(default_factory=dict)
    closed: bool = True


@dataclass(frozen=True, slots=True)
class ListShape:
    item: Shape


Shape = AnyShape | ObjectShape | ListShape
ANY: Shape = AnyShape()
_MAX_REF_DEPTH = 12


def item_of(shape: Shape) -> Shape:
    """Shape of the items of a list shape (ANY when unknown)."""
    return shape.item if isinstance(shape, ListShape) else ANY


def from_schema(schema: Any, root: Any | None = None, depth: int = 0) -> Shape:
    """Shape described by a JSON Schema (local ``$ref``s followed, unions are ANY)."""
    root = schema if root is None else root
    if not isinstance(schema, Mapping) or depth > _MAX_REF_DEPTH:
        return ANY
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return from_schema(_resolve(root, ref), root, depth + 1)
    for key in ("allOf", "anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list):
            non_null = [o for o in options
                        if not (isinstance(o, Mapping) and o.get("type") == "null")]
            if len(non_null) == 1:
                return from_schema(non_null[0], root, depth + 1)
            return ANY
    types = schema.get("type")
    type_set = {types} if isinstance(types, str) else set(types or [])
    type_set.discard("null")
    if "properties" in schema and type_set <= {"object"}:
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        closed = (extra is None or extra is False) and "patternProperties" not in schema
        return ObjectShape({str(k): from_schema(v, root, depth + 1) for k, v in props.items()},
                           closed)
    if type_set == {"array"}:
        return ListShape(from_schema(schema.get("items"), root, depth + 1))
    return ANY


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#/"):
        return None
    node = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
