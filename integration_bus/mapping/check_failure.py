"""The ``check`` step's failure: its message and the figures it names.

A check that fails is a business rule the document breaks (an order whose money does not add
up), so its error must let a person see why without opening the payload: the message (the
step's own, or the rule itself) followed by the value of every field the rule reads. Shared by
the compiled step and the reference interpreter so both say exactly the same.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from integration_bus.errors import CheckFailed, MappingError
from integration_bus.mapping import nodes as n

__all__ = ["FIGURE_WIDTH", "check_failure", "figure_paths"]

FIGURE_WIDTH = 80  # characters of one figure (a list is cut, with "…")


def figure_paths(node: n.Node) -> list[tuple[str, n.Path]]:
    """(label, path node) of every field the expression reads, first use first, once each."""
    found: dict[str, n.Path] = {}
    stack: list[n.Node] = [node]
    while stack:
        current = stack.pop()
        children: list[n.Node] = []
        if isinstance(current, n.Path):
            base = current.base
            if base is None or (isinstance(base, n.Var) and base.name in ("$", "$this",
                                                                            "$input")):
                label = n.render_path(current)
                if isinstance(base, n.Var) and base.name != "$this":
                    label = f"{base.name}.{label}" if label else base.name
                if label:
                    found.setdefault(label, current)
                continue
            children = [base] if base is not None else []
        elif isinstance(current, n.Call):
            children = list(current.args)
        elif isinstance(current, n.Binary | n.Logic):
            children = [current.left, current.right]
        elif isinstance(current, n.Unary):
            children = [current.operand]
        elif isinstance(current, n.Cond):
            children = [current.test, current.then, current.other]
        elif isinstance(current, n.ListLit):
            children = list(current.items)
        stack.extend(reversed(children))
    return list(found.items())


def check_failure(rule: str, message: str | None,
                  figures: list[tuple[str, Callable[[], Any]]]) -> CheckFailed:
    """The error of a failed check: ``message`` (or the rule), then ``label=value`` of each
    figure (``?`` when a figure cannot be read)."""
    shown = []
    for label, read in figures:
        try:
            value = _figure(read())
        except MappingError:
            value = "?"
        shown.append(f"{label}={value}")
    text = message or f"check failed: {rule}"
    return CheckFailed(f"{text} ({', '.join(shown)})" if shown else text, rule=rule)


def _figure(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, Decimal):
        text = format(value, "f")
    elif isinstance(value, datetime | date):
        text = value.isoformat()
    elif isinstance(value, list):
        text = "[" + ", ".join(_figure(item) for item in value) + "]"
    elif isinstance(value, dict):
        text = "{…}"
    else:
        text = str(value)
    return text if len(text) <= FIGURE_WIDTH else text[:FIGURE_WIDTH - 1] + "…"
