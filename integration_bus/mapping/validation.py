"""JSON Schemas by reference (``name@N`` -> ``schemas/**/name.vN.json``) and the validate step.

Each schema is checked against its draft's meta-schema when loaded; a broken schema, an unknown
``$schema`` or a ``$ref`` leaving the file is a ConfigError naming it (see :mod:`.drafts`). At run
time the compiled validator (jsonschema-rs, the schema's own draft, formats asserted) decides;
only when it rejects a document does jsonschema (same draft, format checking) run, to word the
message with the failing field. The compiled validator has the last word: should jsonschema find
nothing wrong, the compiled validator's own message is used. Schemas are self-contained (no
network, no file lookups).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import referencing.exceptions
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

from integration_bus.errors import ConfigError, MappingError
from integration_bus.mapping.conform import Conformer, Plan, plan_for
from integration_bus.mapping.drafts import Draft, Validators, compile_schema
from integration_bus.mapping.shapes import Shape, from_schema
from integration_bus.suggest import closest

__all__ = ["SCHEMA_REF", "LoadedSchema", "SchemaStore", "load_schema"]

SCHEMA_REF = re.compile(r"^([a-z0-9_][a-z0-9_.-]*)@([0-9]+)$")
_MAX_SCHEMA_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoadedSchema:
    """One schema, ready to conform and validate documents."""

    ref: str
    file: str
    schema: dict[str, Any]
    plan: Plan
    shape: Shape
    validators: Validators
    compiled: bool = True

    @property
    def draft(self) -> Draft:
        """The JSON Schema draft the schema is read in (``$schema``; default 2020-12)."""
        return self.validators.draft

    @property
    def conform(self) -> Conformer:
        """Conform a document to this schema (see :mod:`.conform`)."""
        return self.plan.conform

    def validate(self, document: Any) -> None:
        """Raise MappingError (field = JSON path of the first problem) if ``document`` is
        invalid."""
        if not self.compiled:
            self._raise_detailed(document, decided=False)
            return
        try:
            if self.validators.compiled.is_valid(document):
                return
        except ValueError:  # a Python value JSON has no word for (an int key): jsonschema says
            self._raise_detailed(document, decided=False)
            return
        self._raise_detailed(document, decided=True)

    def validate_detailed(self, document: Any) -> None:
        """Validate with jsonschema only (used by the benchmark and tests to compare)."""
        self._raise_detailed(document, decided=False)

    def _raise_detailed(self, document: Any, *, decided: bool) -> None:
        """Raise jsonschema's best error; with ``decided`` (the compiled validator rejected the
        document) raise the compiled validator's own error when jsonschema finds none."""
        try:
            error = best_match(self.validators.detailed.iter_errors(document))
        except (referencing.exceptions.Unresolvable, re.error):  # an ECMA-only pattern
            error = None
        if error is not None:
            path, rule, message = (list(error.absolute_path), list(error.absolute_schema_path),
                                   error.message)
        elif decided:
            first = next(iter(self.validators.compiled.iter_errors(document)), None)
            if first is None:
                return
            path, rule, message = list(first.instance_path), list(first.schema_path), \
                first.message
        else:
            return
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        raise MappingError(f"does not match schema {self.ref}: {message}",
                           field=field.lstrip(".") or "(document)", schema=self.ref,
                           hint="schema rule: " + "/".join(str(p) for p in rule))


def load_schema(schema: dict[str, Any], *, ref: str = "(inline)", file: str = "(inline)",
                compiled: bool = True) -> LoadedSchema:
    """A schema given as data, checked and compiled as a schema file is. Raises ConfigError."""
    validators = compile_schema(schema, file=file)
    return LoadedSchema(ref, file, schema, plan_for(schema), from_schema(schema), validators,
                        compiled)


class SchemaStore:
    """Finds and caches schemas under one directory; one store per load, never shared globally."""

    def __init__(self, directory: Path | None, *, compiled: bool = True) -> None:
        self.directory = directory
        self.compiled = compiled
        self._files: dict[str, Path] | None = None
        self._loaded: dict[str, LoadedSchema] = {}

    def refs(self) -> list[str]:
        return sorted(self._index())

    def get(self, ref: str) -> LoadedSchema:
        """The schema ``ref`` (``name@N``); raises ConfigError (no file context) when unknown."""
        if ref in self._loaded:
            return self._loaded[ref]
        if not SCHEMA_REF.match(ref):
            raise ConfigError(f"{ref!r} is not a schema reference",
                              hint="write name@version, e.g. canonical_order@1 "
                                   "(file schemas/canonical_order.v1.json)")
        path = self._index().get(ref)
        if path is None:
            where = str(self.directory) if self.directory else "no schemas directory"
            raise ConfigError(f"unknown schema {ref!r} (looked in {where})",
                              hint=closest(ref, self._index()) or
                              f"create {ref.split('@')[0]}.v{ref.split('@')[1]}.json")
        loaded = self._load(ref, path)
        self._loaded[ref] = loaded
        return loaded

    def _index(self) -> dict[str, Path]:
        if self._files is None:
            files: dict[str, Path] = {}
            if self.directory is not None and self.directory.is_dir():
                for path in sorted(self.directory.rglob("*.v*.json")):
                    match = re.match(r"^(.+)\.v([0-9]+)\.json$", path.name)
                    if match:
                        ref = f"{match[1]}@{match[2]}"
                        if ref in files:
                            raise ConfigError(f"schema {ref} is defined twice", file=str(path),
                                              hint=f"also in {files[ref]}")
                        files[ref] = path
            self._files = files
        return self._files

    def _load(self, ref: str, path: Path) -> LoadedSchema:
        file = str(path)
        if path.stat().st_size > _MAX_SCHEMA_BYTES:
            raise ConfigError("schema file is too large", file=file)
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read schema: {exc}", file=file) from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"schema is not valid JSON: {exc.msg}", file=file, line=exc.lineno,
                              column=exc.colno) from exc
        if not isinstance(schema, dict):
            raise ConfigError("a schema must be a JSON object", file=file)
        return load_schema(schema, ref=ref, file=file, compiled=self.compiled)
