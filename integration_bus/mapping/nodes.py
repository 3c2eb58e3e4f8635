"""The expression syntax tree: small frozen dataclasses produced by :mod:`.grammar`.

Every node carries ``pos``, the 0-based character offset of its first token inside the expression
text, so load-time errors can point at the exact column in the mapping file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "Binary", "Call", "Cond", "Field", "Index", "ListLit", "Lit", "Logic", "Node", "Path",
    "Segment", "Unary", "Var", "Wild", "plain_fields", "primary_path", "render_path",
]


@dataclass(frozen=True, slots=True)
class Field:
    """``.name`` or ``["name"]``: a key of a JSON object."""

    name: str


@dataclass(frozen=True, slots=True)
class Index:
    """``[n]``: an element of a list (negative counts from the end)."""

    index: int


@dataclass(frozen=True, slots=True)
class Wild:
    """``[*]``: every element of a list (projects the rest of the path over them)."""


Segment = Field | Index | Wild


@dataclass(frozen=True, slots=True)
class Lit:
    """A literal: Decimal, str, bool or None."""

    value: Any
    pos: int = 0


@dataclass(frozen=True, slots=True)
class ListLit:
    items: tuple[Node, ...]
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Var:
    """``$`` (the step's document), ``$this``, ``$index``, ``$input`` or ``$meta``."""

    name: str
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Path:
    """Segments applied to ``base``; ``base`` None means the current scope (a bare field name)."""

    base: Node | None
    segments: tuple[Segment, ...]
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "-" or "not"
    operand: Node
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # + - * / % ~ == != < <= > >= in
    left: Node
    right: Node
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Logic:
    op: str  # and / or (short-circuit)
    left: Node
    right: Node
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Cond:
    test: Node
    then: Node
    other: Node
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Call:
    """``name(args)``; the pipe ``x | name(a)`` is ``Call(name, (x, a), piped=True)``."""

    name: str
    args: tuple[Node, ...]
    pos: int = 0
    piped: bool = False


Node = Lit | ListLit | Var | Path | Unary | Binary | Logic | Cond | Call


# --- queries on trees ---


def plain_fields(node: Node) -> tuple[str, ...]:
    """The field names when ``node`` reads a field of the current scope (``sku``, ``a.b``)."""
    if isinstance(node, Path) and node.base is None and 0 < len(node.segments) <= 2 and \
            all(type(segment) is Field for segment in node.segments):
        return tuple(segment.name for segment in node.segments)  # type: ignore[union-attr]
    return ()


def render_path(node: Path) -> str:
    """Text of a path as the author wrote it (``line_items[*].sku``), without ``$``/``$this``."""
    parts: list[str] = []
    for segment in node.segments:
        if isinstance(segment, Field):
            parts.append(f".{segment.name}")
        elif isinstance(segment, Index):
            parts.append(f"[{segment.index}]")
        else:
            parts.append("[*]")
    return "".join(parts).lstrip(".")


def primary_path(node: Node) -> tuple[str | None, bool]:
    """The first input path an expression reads (left-most), and whether it is scope-relative."""
    stack: list[Node] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Path) and (current.base is None or isinstance(current.base, Var)):
            base = current.base
            relative = base is None or base.name == "$this"
            if isinstance(base, Var) and base.name in ("$index", "$meta"):
                continue
            return render_path(current) or None, relative
        children: list[Node] = []
        if isinstance(current, Call):
            children = list(current.args)
        elif isinstance(current, Binary | Logic):
            children = [current.left, current.right]
        elif isinstance(current, Unary):
            children = [current.operand]
        elif isinstance(current, Cond):
            children = [current.test, current.then, current.other]
        elif isinstance(current, ListLit):
            children = list(current.items)
        elif isinstance(current, Path) and current.base is not None:
            children = [current.base]
        stack.extend(reversed(children))
    return None, True
