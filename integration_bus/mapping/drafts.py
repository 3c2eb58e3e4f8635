"""JSON Schema drafts: which one a schema is written in, and its two validators.

``$schema`` names the draft (draft-04, -06, -07, 2019-09, 2020-12); a schema without one is read
as **2020-12** by both validators; any other ``$schema`` is a ConfigError. Each schema gets

- a **compiled** validator (jsonschema-rs, Rust) for that draft: it decides whether a document
  is valid, with format assertion on and the ECMA-262 regular expressions the spec asks for;
- a **detailed** validator (jsonschema, the same draft) that words the error when a document is
  rejected (the field, the rule).

Both are offline: a ``$ref`` may only point into the schema itself (JSON pointers, ``$id``,
``$anchor``, ``$dynamicRef``) or at a draft's own meta-schema; anything else is a ConfigError
when the schema is loaded. The formats checked and the known deviations from the official
JSON-Schema-Test-Suite are listed in docs/mapping-language.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import idna
import jsonschema  # type: ignore[import-untyped]
import jsonschema_rs
import referencing
import referencing.exceptions
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

from integration_bus.errors import ConfigError
from integration_bus.suggest import closest

__all__ = ["DEFAULT_DRAFT", "DRAFTS", "Draft", "Validators", "compile_schema", "draft_of"]


@dataclass(frozen=True, slots=True)
class Draft:
    """One JSON Schema draft: its ``$schema`` URI and the two validator classes for it."""

    name: str
    uri: str
    detailed: Any  # a jsonschema validator class
    compiled: Any  # a jsonschema_rs validator class


DRAFTS: tuple[Draft, ...] = (
    Draft("draft-04", "http://json-schema.org/draft-04/schema#", jsonschema.Draft4Validator,
          jsonschema_rs.Draft4Validator),
    Draft("draft-06", "http://json-schema.org/draft-06/schema#", jsonschema.Draft6Validator,
          jsonschema_rs.Draft6Validator),
    Draft("draft-07", "http://json-schema.org/draft-07/schema#", jsonschema.Draft7Validator,
          jsonschema_rs.Draft7Validator),
    Draft("2019-09", "https://json-schema.org/draft/2019-09/schema",
          jsonschema.Draft201909Validator, jsonschema_rs.Draft201909Validator),
    Draft("2020-12", "https://json-schema.org/draft/2020-12/schema",
          jsonschema.Draft202012Validator, jsonschema_rs.Draft202012Validator),
)
DEFAULT_DRAFT = DRAFTS[-1]
"""The draft of a schema without ``$schema``."""

_BY_URI = {d.uri.rstrip("#"): d for d in DRAFTS}


def draft_of(schema: Any, *, file: str | None = None) -> Draft:
    """The draft ``schema`` is written in; ConfigError (naming ``file``) for an unknown one."""
    if not isinstance(schema, dict) or "$schema" not in schema:
        return DEFAULT_DRAFT
    uri = schema["$schema"]
    if not isinstance(uri, str):
        raise ConfigError("$schema must be a URI (text)", file=file, field="$schema")
    found = _BY_URI.get(uri.rstrip("#"))
    if found is None:
        raise ConfigError(f"$schema {uri!r} is not a JSON Schema draft the bus validates",
                          file=file, field="$schema",
                          hint=closest(uri, [d.uri for d in DRAFTS]) or
                          "one of: " + ", ".join(d.uri for d in DRAFTS))
    return found


def _refuse(uri: str) -> Any:
    raise ValueError(f"$ref {uri!r} points outside this schema (nothing is fetched)")


def _idn_hostname(value: str) -> bool:
    """IDNA2008 (RFC 5890-5893) by the ``idna`` package, as jsonschema checks it: compatibility
    forms such as fullwidth digits are not valid in a label (jsonschema-rs maps them first)."""
    if not value or len(value) > 253:
        return False
    try:
        idna.encode(value)
    except (idna.IDNAError, UnicodeError, ValueError):
        return False
    return True


_FORMATS: dict[str, Callable[[str], bool]] = {"idn-hostname": _idn_hostname}


@dataclass(frozen=True, slots=True)
class Validators:
    """A schema's draft and its two validators (see the module docstring)."""

    draft: Draft
    compiled: Any  # jsonschema_rs validator: is_valid / iter_errors
    detailed: Any  # jsonschema validator with format checking: iter_errors


def compile_schema(schema: Any, *, file: str | None = None) -> Validators:
    """Check ``schema`` against its draft's meta-schema and build both validators. Raises
    ConfigError naming ``file`` (and the schema field) for an invalid schema, an unknown
    draft or a ``$ref`` that leaves the schema."""
    draft = draft_of(schema, file=file)
    # The meta-schema check without its "regex" format: jsonschema would judge patterns by
    # Python's re, the compiled validator below by ECMA-262, as the drafts say.
    meta = draft.detailed(draft.detailed.META_SCHEMA)
    problem = best_match(meta.iter_errors(schema))
    if problem is not None:
        where = "/".join(str(p) for p in problem.absolute_path)
        raise ConfigError(f"invalid JSON Schema ({draft.name}): {problem.message}", file=file,
                          field=where or None)
    try:
        compiled = draft.compiled(schema, validate_formats=True, formats=_FORMATS,
                                  retriever=_refuse)
    except ValueError as exc:  # jsonschema_rs.ValidationError: a ref or regex it cannot use
        first = str(exc).split("\n", 1)[0]
        raise ConfigError(f"unusable JSON Schema ({draft.name}): {first}", file=file,
                          hint="copy outside definitions into $defs: schemas are "
                               "self-contained") from None
    registry: referencing.Registry[Any] = referencing.Registry(  # type: ignore[call-arg]
        retrieve=_no_resource)
    detailed = draft.detailed(schema, format_checker=draft.detailed.FORMAT_CHECKER,
                              registry=registry)
    return Validators(draft, compiled, detailed)


def _no_resource(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]
