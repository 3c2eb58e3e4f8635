"""Safe YAML reading with source positions: bus.yaml, mapping files, sidecar tests, xref tables.

:func:`read_yaml` refuses what makes configuration hard to review (anchors, aliases, custom tags,
duplicate keys, oversized files) and returns plain Python data plus a :class:`Locator` that turns a
path into that data (``("steps", 0, "map", "sku")``) back into ``line:column`` (1-based) — so
every later error can point at the spot in the file. Floats are refused everywhere: money is never
a float. Nesting deeper than :data:`MAX_DEPTH` mappings/lists is refused from the event stream,
before anything recursive (the composer, ``_plain``) could run out of stack.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    NodeEvent,
    ScalarEvent,
)
from ruamel.yaml.scalarfloat import ScalarFloat
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)

from integration_bus.errors import ConfigError

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "Locator", "Position", "read_yaml", "read_yaml_text"]

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64  # nested mappings/lists; real config nests a dozen levels at most
_STANDARD_TAG_PREFIX = "tag:yaml.org,2002:"
_ALLOWED_STANDARD_TAGS = {"str", "int", "bool", "null", "map", "seq"}


@dataclass(frozen=True, slots=True)
class Position:
    """Where a value sits in its file: 1-based line and column.

    ``quote`` is 1 when the scalar is quoted on one line (so text offsets must skip the quote),
    ``multiline`` is True for block scalars (``|``/``>``), where column arithmetic stops being
    exact.
    """

    line: int
    column: int
    quote: int = 0
    multiline: bool = False

    def at_offset(self, offset: int) -> tuple[int, int]:
        """Line and column of character ``offset`` inside a one-line scalar starting here."""
        if self.multiline:
            return self.line + 1, self.column
        return self.line, self.column + self.quote + offset


class Locator:
    """Maps a data path to the position of the value (or, with ``key=True``, of its key)."""

    def __init__(self, file: str, root: Any) -> None:
        self.file = file
        self._root = root

    def position(self, path: Sequence[str | int], *, key: bool = False) -> Position:
        """Best-known position of ``path``: the deepest existing node on the way down."""
        node = self._root
        best = Position(1, 1)
        for depth, step in enumerate(path, start=1):
            if isinstance(node, CommentedMap) and step in node:
                if key and depth == len(path):
                    line, col = node.lc.key(step)
                    return Position(line + 1, col + 1)
                line, col = node.lc.value(step)
                best = _scalar_position(node[step], line, col)
                node = node[step]
            elif isinstance(node, CommentedSeq) and isinstance(step, int) and 0 <= step < len(node):
                line, col = node.lc.item(step)
                best = _scalar_position(node[step], line, col)
                node = node[step]
            else:
                if isinstance(node, CommentedMap | CommentedSeq):
                    best = Position(node.lc.line + 1, node.lc.col + 1)
                break
        return best

    def present(self, path: Sequence[str | int]) -> tuple[str | int, ...]:
        """The steps of ``path`` that exist in the file, in order, skipping the others — a
        validator's location with its union tags and wrapper names dropped, or a missing
        key's path cut at its parent."""
        node = self._root
        out: list[str | int] = []
        for step in path:
            inside = step in node if isinstance(node, CommentedMap) else \
                isinstance(node, CommentedSeq) and isinstance(step, int) and 0 <= step < len(node)
            if inside:
                node = node[step]
                out.append(step)
        return tuple(out)

    def error(self, message: str, path: Sequence[str | int], *, key: bool = False,
              hint: str | None = None, offset: int | None = None) -> ConfigError:
        """A ConfigError located at ``path`` (and ``offset`` characters into its scalar)."""
        pos = self.position(path, key=key)
        line, column = (pos.line, pos.column) if offset is None else pos.at_offset(offset)
        return ConfigError(message, file=self.file, line=line, column=column,
                           field=render_path(path), hint=hint)


def render_path(path: Sequence[str | int]) -> str | None:
    """``("steps", 0, "map", "sku")`` -> ``steps[0].map.sku``."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or None


def _scalar_position(value: Any, line: int, col: int) -> Position:
    if isinstance(value, CommentedMap | CommentedSeq):
        return Position(value.lc.line + 1, value.lc.col + 1)
    multiline = isinstance(value, LiteralScalarString | FoldedScalarString)
    quoted = isinstance(value, SingleQuotedScalarString | DoubleQuotedScalarString)
    return Position(line + 1, col + 1, 1 if quoted else 0, multiline)


def read_yaml(path: Path, *, max_bytes: int = MAX_FILE_BYTES,
              decimals: bool = False) -> tuple[Any, Locator]:
    """Read ``path`` safely; raises ConfigError (with file:line:col) on anything refused.

    Unquoted non-integer numbers are refused, or read as ``Decimal`` when ``decimals`` is true
    (sidecar test data, where they stand for JSON numbers).
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=str(path)) from exc
    if size > max_bytes:
        raise ConfigError(f"file is {size} bytes; the limit is {max_bytes}", file=str(path),
                          hint="split it into smaller files")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file as UTF-8: {exc}", file=str(path)) from exc
    return read_yaml_text(text, str(path), max_bytes=max_bytes, decimals=decimals)


def read_yaml_text(text: str, file: str, *, max_bytes: int = MAX_FILE_BYTES,
                   decimals: bool = False) -> tuple[Any, Locator]:
    """Like :func:`read_yaml` for text already in memory (``file`` names it in errors)."""
    if len(text.encode("utf-8")) > max_bytes:
        raise ConfigError(f"document is larger than {max_bytes} bytes", file=file)
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    try:
        _refuse_unsafe_events(yaml, text, file)
        data = yaml.load(text)
    except ConfigError:
        raise
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=line, column=column,
                          hint=_yaml_hint(problem)) from exc
    except YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file) from exc
    locator = Locator(file, data)
    return _plain(data, locator, (), decimals), locator


def _yaml_hint(problem: str) -> str | None:
    if "duplicate key" in problem:
        return "each key may appear once in a mapping; remove or rename one of them"
    if "mapping values are not allowed" in problem:
        return "quote expressions that contain ': ' (colon and space)"
    if "found character '\\t'" in problem:
        return "indent with spaces, not tabs"
    return None


def _refuse_unsafe_events(yaml: YAML, text: str, file: str) -> None:
    depth = 0
    for event in yaml.parse(io.StringIO(text)):
        mark = event.start_mark
        where = {"file": file, "line": mark.line + 1, "column": mark.column + 1}
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(f"YAML nested deeper than {MAX_DEPTH} levels", **where,
                                  hint="flatten the structure; no configuration needs this depth")
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
        if isinstance(event, AliasEvent):
            raise ConfigError("YAML aliases (*name) are not allowed", **where,
                              hint="repeat the value instead; aliases hide what a step really does")
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise ConfigError("YAML anchors (&name) are not allowed", **where,
                              hint="repeat the value instead of anchoring it")
        tag = getattr(event, "tag", None)
        if tag is not None and not (isinstance(event, ScalarEvent) and tag == "!"):
            name = tag[len(_STANDARD_TAG_PREFIX):] if tag.startswith(_STANDARD_TAG_PREFIX) else None
            if name not in _ALLOWED_STANDARD_TAGS:
                raise ConfigError(f"YAML tag {tag!r} is not allowed", **where,
                                  hint="remove the tag; these files hold plain data only")


def _plain(node: Any, locator: Locator, path: tuple[str | int, ...], decimals: bool) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise locator.error(f"keys must be text, got {key!r}", (*path, key), key=True,
                                    hint="quote the key")
            out[str(key)] = _plain(value, locator, (*path, key), decimals)
        return out
    if isinstance(node, CommentedSeq):
        return [_plain(item, locator, (*path, i), decimals) for i, item in enumerate(node)]
    if isinstance(node, ScalarFloat | float) and decimals:
        try:
            return Decimal(str(node))
        except ArithmeticError as exc:
            raise locator.error(f"not a decimal number: {node}", path) from exc
    if isinstance(node, ScalarFloat | float):
        raise locator.error(f"the number {node} would be read as a binary float", path,
                            hint=f"quote it ('{node}') so it stays exact as a decimal")
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, date):
        raise locator.error(f"{node} was read as a YAML date", path,
                            hint=f"quote it ('{node}') to keep it as text")
    raise locator.error(f"unsupported YAML value {node!r}", path,
                        hint="use text, integers, true/false, null, lists and mappings only")
