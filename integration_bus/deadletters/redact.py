"""Masking of personal data in dead-letter payloads (list, show, export), by configured paths.

Paths: ``customer.email``, ``lines[*].card_number``, ``*.phone`` (any key at that level) and
``**.email`` (the key at any depth). Masking keeps just enough to recognise a value: the first
letter and the domain of an email, the last four characters of anything else longer than six.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["Redactor", "mask"]

_SEGMENT = re.compile(r"\[\*\]|\[(\d+)\]|([^.\[\]]+)")


def _parse(path: str) -> tuple[str, ...]:
    parts: list[str] = []
    for match in _SEGMENT.finditer(path):
        token = match.group(0)
        parts.append("*" if token == "[*]" else (match.group(1) or match.group(2)))
    return tuple(parts)


def mask(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    text = str(value)
    if "@" in text:
        local, _, domain = text.partition("@")
        return f"{local[:1]}***@{domain}"
    return f"***{text[-4:]}" if len(text) > 6 else "***"


class Redactor:
    """Applies the configured paths to a document, returning a masked copy."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = [_parse(p) for p in paths if p.strip()]

    def __bool__(self) -> bool:
        return bool(self.paths)

    def apply(self, document: Any) -> Any:
        for path in self.paths:
            document = _apply(document, path)
        return document


def _apply(node: Any, path: tuple[str, ...]) -> Any:
    if not path:
        return mask(node) if not isinstance(node, dict | list) else _mask_all(node)
    head, rest = path[0], path[1:]
    if head == "**":
        node = _apply(node, rest)
        if isinstance(node, dict):
            return {k: _apply(v, path) for k, v in node.items()}
        if isinstance(node, list):
            return [_apply(v, path) for v in node]
        return node
    if isinstance(node, dict):
        return {k: (_apply(v, rest) if head in ("*", k) else v) for k, v in node.items()}
    if isinstance(node, list):
        if head == "*":
            return [_apply(v, rest) for v in node]
        if head.isdigit() and int(head) < len(node):
            copy = list(node)
            copy[int(head)] = _apply(copy[int(head)], rest)
            return copy
    return node


def _mask_all(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _mask_all(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask_all(v) for v in node]
    return mask(node)
