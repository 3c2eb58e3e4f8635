"""The expression syntax tree: small frozen dataclasses produced by :mod:`.grammar`.

Every node carries ``pos``, the 0-based character offset of its first token inside the expression
text, so load-time errors can point at the exact column in the mapping file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

__all__ = [
    "Binary", "Call", "Cond", "Field", "Index", "ListLit", "Lit", "Logic", "Node", "Path",
    "Segment", "Unary", "Var", "Wild",
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


Node = Union[Lit, ListLit, Var, Path, Unary, Binary, Logic, Cond, Call]
