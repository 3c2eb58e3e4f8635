"""Loading layout files (``config/layouts/*.yaml``) safely, with every error at file:line:col.

YAML is read by the core's safe reader (``read_yaml_text``: anchors/aliases, custom tags,
duplicate keys, floats, deep nesting refused), with files capped at 256 KiB (a layout is text
written by people). Validation problems become :class:`LayoutError` pointing at the offending key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from connectors.pos_file.errors import LayoutError
from connectors.pos_file.layout import LayoutProblem, LayoutSpec
from connectors.pos_file.parser import Layout
from integration_bus.connector import ConfigError, Locator, read_yaml_text

__all__ = ["MAX_LAYOUT_BYTES", "load_layout", "parse_layout"]

MAX_LAYOUT_BYTES = 256 * 1024


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


def _first_problem(exc: ValidationError, where: Locator, source: str) -> LayoutError:
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


def _position(locator: Locator, loc: tuple[Any, ...]) -> tuple[int, int]:
    probe = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    position = locator.position(probe, key=True)
    return position.line, position.column


def _load(text: str, source: str) -> tuple[Any, Locator]:
    """The core's safe reader (anchors, aliases, custom tags, duplicate keys, nesting, size),
    its ConfigError re-raised as a LayoutError at the same place."""
    try:
        return read_yaml_text(text, source, max_bytes=MAX_LAYOUT_BYTES)
    except ConfigError as exc:
        raise LayoutError(exc.message, **exc.context) from exc
