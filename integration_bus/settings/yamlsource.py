"""Safe YAML loading with positions: plain data plus where each value sits in the file.

Refuses what makes a config hard to read or dangerous to load: anchors and aliases, custom tags,
duplicate keys, files over a size cap, absurd nesting. Every refusal is a ``ConfigError`` naming
``file:line:col``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from integration_bus.errors import ConfigError

__all__ = ["MAX_BYTES", "Located", "load_yaml"]

MAX_BYTES = 1 << 20  # 1 MiB: a config is text written by people
MAX_DEPTH = 64
_STANDARD_TAG_PREFIX = "tag:yaml.org,2002:"

Path_ = tuple[str | int, ...]


@dataclass
class Located:
    """Loaded YAML: ``data`` as plain dict/list/scalars, ``positions`` maps a path to (line, col).

    Both are 1-based. A mapping key's path points at the key itself; ``value_positions`` points at
    the value (used when the value, not the key, is wrong).
    """

    file: Path
    data: Any
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    value_positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_, *, value: bool = True) -> tuple[int | None, int | None]:
        """Best known position for ``path``: the closest ancestor that has one."""
        table = self.value_positions if value else self.positions
        probe = tuple(path)
        while True:
            if probe in table:
                return table[probe]
            if probe in self.positions:
                return self.positions[probe]
            if not probe:
                return None, None
            probe = probe[:-1]

    def error(self, path: Path_, message: str, *, hint: str | None = None,
              value: bool = True) -> ConfigError:
        line, col = self.where(path, value=value)
        return ConfigError(message, file=str(self.file), line=line, column=col,
                           field=dotted(path) or None, hint=hint)


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_yaml(file: Path, *, text: str | None = None, max_bytes: int = MAX_BYTES) -> Located:
    """Load ``file`` (or ``text`` given for it) safely; raises ConfigError with file:line:col."""
    if text is None:
        try:
            size = file.stat().st_size
            if size > max_bytes:
                raise ConfigError(f"file is {size} bytes; the limit is {max_bytes}",
                                  file=str(file), hint="split it, or look for a runaway paste")
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError("file not found", file=str(file)) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text: {exc}", file=str(file)) from exc
    elif len(text.encode()) > max_bytes:
        raise ConfigError(f"file is over the {max_bytes}-byte limit", file=str(file))
    yaml = YAML(typ="rt")
    _refuse_unsafe_events(yaml, file, text)
    try:
        raw = yaml.load(io.StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        raise ConfigError(f"YAML: {exc.problem or exc.context}", file=str(file), line=line,
                          column=col) from exc
    except YAMLError as exc:
        raise ConfigError(f"YAML: {exc}", file=str(file)) from exc
    located = Located(file=file, data=None)
    located.data = _plain(raw, (), located)
    return located


def _refuse_unsafe_events(yaml: YAML, file: Path, text: str) -> None:
    depth = 0
    try:
        for event in yaml.parse(io.StringIO(text)):
            kind = type(event).__name__
            mark = event.start_mark
            where = {"file": str(file), "line": mark.line + 1, "column": mark.column + 1}
            if kind == "AliasEvent" or getattr(event, "anchor", None):
                raise ConfigError(
                    "YAML anchors and aliases are not allowed", **where,
                    hint="write the value out in full; configs are read more than written")
            tag = getattr(event, "tag", None)
            if tag and not str(tag).startswith(_STANDARD_TAG_PREFIX):
                raise ConfigError(f"custom YAML tag {tag} is not allowed", **where,
                                  hint="remove the tag; values are plain strings, numbers, "
                                       "lists and mappings")
            if kind in ("MappingStartEvent", "SequenceStartEvent"):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(f"nesting deeper than {MAX_DEPTH} levels", **where)
            elif kind in ("MappingEndEvent", "SequenceEndEvent"):
                depth -= 1
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(f"YAML: {exc.problem or exc.context}", file=str(file),
                          line=mark.line + 1 if mark else None,
                          column=mark.column + 1 if mark else None) from exc


def _plain(node: Any, path: Path_, located: Located) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            child = (*path, key if isinstance(key, str | int) else str(key))
            kline, kcol = node.lc.key(key)
            located.positions[child] = (kline + 1, kcol + 1)
            vline, vcol = node.lc.value(key)
            located.value_positions[child] = (vline + 1, vcol + 1)
            out[_scalar(key)] = _plain(value, child, located)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            child = (*path, index)
            line, col = node.lc.item(index)
            located.positions[child] = (line + 1, col + 1)
            items.append(_plain(value, child, located))
        return items
    return _scalar(node)


def _scalar(value: Any) -> Any:
    # ruamel's round-trip scalars subclass the builtins; hand out plain ones.
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value
