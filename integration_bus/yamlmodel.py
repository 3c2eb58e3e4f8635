"""Read YAML into a pydantic model, with every problem at ``file:line:col: field``.

The one translator from pydantic's ``ValidationError`` to located :class:`ConfigError`\\ s, used
for ``bus.yaml``, mapping and sidecar files, and by plugins for their own files (layouts)::

    spec = load_model(path, LayoutSpec)                # ConfigError: file:line:col, field, hint
    spec = parse_model(text, "<layout>", LayoutSpec)   # the same for text in memory

The YAML is read by the core's safe reader (:mod:`integration_bus.yamlsafe`: anchors, aliases,
custom tags, duplicate keys, floats, deep nesting and oversized files refused). Unknown keys
come first and carry a did-you-mean from the keys the model accepts there; a missing key is
reported at its parent; a validator that knows where below its field a problem lies raises
:class:`ConfigProblem` with that path (and a hint).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, RootModel, ValidationError

from integration_bus.errors import ConfigError
from integration_bus.suggest import did_you_mean
from integration_bus.yamlsafe import MAX_FILE_BYTES, Locator, read_yaml, read_yaml_text

__all__ = ["ConfigProblem", "load_model", "parse_model", "validate_model", "validation_errors"]

M = TypeVar("M", bound=BaseModel)

_HINTS = {
    "int_parsing": "write a whole number",
    "int_type": "write a whole number",
    "bool_parsing": "write true or false",
    "list_type": "write a YAML list: [a, b] or one '- item' per line",
    "dict_type": "write a mapping of key: value lines",
    "model_type": "write a mapping of key: value lines",
    "string_type": "quote the value",
    "string_pattern_mismatch": "names are lower-case letters, digits, '_' and '-'",
}


class ConfigProblem(ValueError):
    """Raised by a model validator for a problem it can place: ``path`` below the field
    whose validator raised it (``("records", "sale", "fields", 2)``), and an optional
    ``hint``. The translator reports it at that spot of the file."""

    def __init__(self, path: tuple[str | int, ...], message: str, *,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.hint = hint


def load_model(path: Path, model: type[M], *, max_bytes: int = MAX_FILE_BYTES,
               decimals: bool = False) -> M:
    """Read the YAML file ``path`` safely and validate it as ``model``. Raises ConfigError
    (file:line:col, field, hint) for the first problem: unreadable or unsafe YAML, then the
    most useful validation error. ``decimals``: unquoted non-integer numbers become Decimals
    (else they are refused: money is never a binary float)."""
    data, locator = read_yaml(path, max_bytes=max_bytes, decimals=decimals)
    return validate_model(model, data, locator)


def parse_model(text: str, file: str, model: type[M], *, max_bytes: int = MAX_FILE_BYTES,
                decimals: bool = False) -> M:
    """:func:`load_model` for YAML text in memory (``file`` names it in errors)."""
    data, locator = read_yaml_text(text, file, max_bytes=max_bytes, decimals=decimals)
    return validate_model(model, data, locator)


def validate_model(model: type[M], data: object, locator: Locator,
                   prefix: Sequence[str | int] = ()) -> M:
    """``model`` validated from ``data`` (which sits at ``prefix`` in the file ``locator``
    reads); raises the first of :func:`validation_errors`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_errors(exc, locator, model, prefix)[0] from exc


def validation_errors(exc: ValidationError, locator: Locator, model: object,
                      prefix: Sequence[str | int] = ()) -> list[ConfigError]:
    """Every problem of ``exc`` as a located ConfigError, unknown keys first. ``model`` is the
    model (or type annotation) that was validated, for the did-you-mean of unknown keys;
    ``prefix`` is where the validated data sits in the file."""
    errors = sorted(exc.errors(include_url=False, include_input=False),
                    key=lambda error: error["type"] != "extra_forbidden")
    out = []
    for error in errors:
        loc: tuple[str | int, ...] = tuple(error["loc"])
        kind = error["type"]
        cause = (error.get("ctx") or {}).get("error")
        hint = _HINTS.get(kind)
        if isinstance(cause, ConfigProblem):
            loc, hint = (*loc, *cause.path), cause.hint
        path = locator.present((*prefix, *loc))
        if kind == "extra_forbidden":
            known = _keys_at(model, loc[:-1])
            out.append(locator.error(f"unknown key {loc[-1]!r}", path, key=True,
                                     hint=did_you_mean(str(loc[-1]), known) if known else None))
        elif kind == "missing":
            out.append(locator.error(f"missing required key {loc[-1]!r}", path,
                                     key=bool(path)))
        else:
            message = error["msg"].removeprefix("Value error, ")
            out.append(locator.error(message, path, hint=hint))
    return out


def _keys_at(model: object, loc: Sequence[str | int]) -> list[str]:
    """The keys ``model`` accepts at ``loc`` (through nested models, lists, dicts, optionals
    and unions; pydantic's union tags pick the member, wrapper names are skipped)."""
    current: Any = model
    for part in loc:
        current = _through_root(current)
        models = _models_in(current)
        chosen = next((m for m in models if isinstance(part, str) and part in _fields(m)), None)
        if chosen is not None:
            current = _fields(chosen)[str(part)]
            continue
        tagged = next((m for m in models if m.__name__ == part), None)
        if tagged is not None:
            current = tagged
            continue
        item = _item_type(current)
        if item is not None:
            current = item
    models = _models_in(_through_root(current))
    return list(_fields(models[0])) if models else []


def _through_root(annotation: Any) -> Any:
    """What a ``RootModel`` holds (its data has no ``root`` key); other annotations as they
    are."""
    while isinstance(annotation, type) and issubclass(annotation, RootModel):
        annotation = annotation.model_fields["root"].annotation
    return annotation


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """Key (alias or name) -> annotation of a model's fields."""
    return {info.alias or name: info.annotation for name, info in model.model_fields.items()}


def _item_type(annotation: Any) -> Any:
    """The value type of a list or dict annotation (through Annotated and Optional)."""
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (list, dict, tuple, set, frozenset):
        args = typing.get_args(annotation)
        return args[-1] if args else None
    return None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation names (``X``, ``X | None``, ``Annotated[X, ...]``,
    the members of a union)."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation
