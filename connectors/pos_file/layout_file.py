"""Loading layout files (``config/layouts/*.yaml``) safely, with every error at file:line:col.

The core's YAML-into-a-model service (``load_model`` / ``parse_model``: anchors/aliases,
custom tags, duplicate keys, floats, deep nesting refused; unknown keys with a did-you-mean;
a ``LayoutProblem`` placed where it applies), with files capped at 256 KiB (a layout is text
written by people). Its ConfigError is raised as a :class:`LayoutError` at the same place.
"""

from __future__ import annotations

from pathlib import Path

from connectors.pos_file.errors import LayoutError
from connectors.pos_file.layout import LayoutSpec
from connectors.pos_file.parser import Layout
from integration_bus.connector import ConfigError, load_model, parse_model

__all__ = ["MAX_LAYOUT_BYTES", "load_layout", "parse_layout"]

MAX_LAYOUT_BYTES = 256 * 1024


def load_layout(path: Path, *, field: str | None = None) -> Layout:
    """Read, validate and compile the layout at ``path``; raises LayoutError (naming ``field``,
    the config key that named the file, when given)."""
    if not path.is_file():
        raise LayoutError("layout file not found", file=str(path), field=field)
    try:
        try:
            spec = load_model(path, LayoutSpec, max_bytes=MAX_LAYOUT_BYTES)
        except LayoutError:
            raise
        except ConfigError as exc:
            raise _layout_error(exc) from exc
        return Layout(spec, source=str(path))
    except LayoutError as exc:
        exc.with_context(field=field)
        raise


def parse_layout(text: str, *, source: str = "<layout>") -> Layout:
    """Validate and compile layout YAML ``text`` (``source`` names it in errors)."""
    try:
        spec = parse_model(text, source, LayoutSpec, max_bytes=MAX_LAYOUT_BYTES)
    except LayoutError:
        raise
    except ConfigError as exc:
        raise _layout_error(exc) from exc
    return Layout(spec, source=source)


def _layout_error(exc: ConfigError) -> LayoutError:
    return LayoutError(exc.message, **exc.context)
