"""Loading layout files (``config/layouts/*.yaml``) safely, with every error at file:line:col.

Refuses anchors/aliases, custom tags, duplicate keys and files over 256 KiB (a layout is text
written by people). Validation problems become :class:`LayoutError` pointing at the offending key.
"""

from __future__ import annotations

import difflib
import io
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from connectors.pos_file.errors import LayoutError
from connectors.pos_file.layout import LayoutProblem, LayoutSpec
from connectors.pos_file.parser import Layout

__all__ = ["MAX_LAYOUT_BYTES", "load_layout", "parse_layout"]

MAX_LAYOUT_BYTES = 256 * 1024
_STANDARD_TAG = "tag:yaml.org,2002:"
Where = dict[tuple[str | int, ...], tuple[int, int]]


def load_layout(path: Path, *, field: str | None = None) -> Layout:
    """Read, validate and compile the layout at ``path``; raises LayoutError (naming ``field``,
    the config key that named the file, when given)."""
    try:
        return _load_layout(path)
    except LayoutError as exc:
        exc.with_context(field=field)
        raise


def _load_layout(path: Path) -> Layout:
    try:
        if path.stat().st_size > MAX_LAYOUT_BYTES:
            raise LayoutError(f"layout file is over {MAX_LAYOUT_BYTES} bytes", file=str(path))
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise LayoutError("layout file not found", file=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError(f"cannot read the layout: {exc}", file=str(path)) from exc
    return parse_layout(text, source=str(path))


def parse_layout(text: str, *, source: str = "<layout>") -> Layout:
    """Validate and compile layout YAML ``text`` (``source`` names it in errors)."""
    data, where = _load(text, source)
    try:
        spec = LayoutSpec.model_validate(data)
    except ValidationError as exc:
        raise _first_problem(exc, where, source) from None
    return Layout(spec, source=source)


def _first_problem(exc: ValidationError, where: Where, source: str) -> LayoutError:
    """The most useful of pydantic's errors (unknown keys first), placed in the file."""
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc: tuple[str | int, ...] = tuple(first["loc"])
    cause = (first.get("ctx") or {}).get("error")
    hint = None
    if isinstance(cause, LayoutProblem):  # a layout-wide check that knows where it applies
        loc, hint = (*loc, *cause.path), cause.hint
    line, column = _position(where, loc)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
        hint = _did_you_mean(str(loc[-1]), loc[:-1])
    return LayoutError(message, file=source, line=line, column=column,
                       field=".".join(str(p) for p in loc) or None, hint=hint)


def _did_you_mean(word: str, parent: tuple[str | int, ...]) -> str | None:
    model: Any = LayoutSpec
    for part in parent:  # walk the models to the one that holds the unknown key
        if isinstance(part, int) or model is None:
            continue
        info = getattr(model, "model_fields", {}).get(part)
        annotation = getattr(info, "annotation", None)
        args = [a for a in getattr(annotation, "__args__", ()) if hasattr(a, "model_fields")]
        model = annotation if hasattr(annotation, "model_fields") else (args[-1] if args else
                                                                        model)
    known = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(word, known, n=1)
    return f"did you mean {close[0]!r}?" if close else None


def _position(where: Where, loc: tuple[Any, ...]) -> tuple[int | None, int | None]:
    probe = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    while probe:
        if probe in where:
            return where[probe]
        probe = probe[:-1]
    return where.get((), (None, None))


def _load(text: str, source: str) -> tuple[Any, Where]:
    if len(text.encode()) > MAX_LAYOUT_BYTES:
        raise LayoutError(f"layout is over {MAX_LAYOUT_BYTES} bytes", file=source)
    yaml = YAML(typ="rt")
    try:
        for event in yaml.parse(io.StringIO(text)):
            mark = event.start_mark
            if type(event).__name__ == "AliasEvent" or getattr(event, "anchor", None):
                raise LayoutError("YAML anchors and aliases are not allowed in layouts",
                                  file=source, line=mark.line + 1, column=mark.column + 1)
            tag = getattr(event, "tag", None)
            if tag and not str(tag).startswith(_STANDARD_TAG):
                raise LayoutError(f"custom YAML tag {tag} is not allowed", file=source,
                                  line=mark.line + 1, column=mark.column + 1)
        raw = yaml.load(io.StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise LayoutError(f"YAML: {exc.problem or exc.context}", file=source,
                          line=mark.line + 1 if mark else None,
                          column=mark.column + 1 if mark else None) from None
    except YAMLError as exc:
        raise LayoutError(f"YAML: {exc}", file=source) from None
    where: Where = {(): (1, 1)}
    return _plain(raw, (), where), where


def _plain(node: Any, path: tuple[str | int, ...], where: Where) -> Any:
    if isinstance(node, CommentedMap):
        out = {}
        for key, value in node.items():
            line, column = node.lc.key(key)
            where[(*path, str(key))] = (line + 1, column + 1)
            out[str(key)] = _plain(value, (*path, str(key)), where)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            line, column = node.lc.item(index)
            where[(*path, index)] = (line + 1, column + 1)
            items.append(_plain(value, (*path, index), where))
        return items
    if isinstance(node, bool) or node is None:
        return node
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node
