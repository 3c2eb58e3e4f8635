"""JSON Schemas by reference (``name@N`` -> ``schemas/**/name.vN.json``) and the validate step.

Each schema is checked with jsonschema when loaded (a broken schema is a ConfigError naming its
file). At run time a compiled fastjsonschema validator answers the common "valid" case fast; only
when it rejects a document does jsonschema (with format checking) run, to produce the detailed
message with the failing field. When the two disagree jsonschema wins. Schemas must be
self-contained: ``$ref`` may point inside the same file only (no network, no file lookups).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema  # type: ignore[import-untyped]
from jsonschema.exceptions import SchemaError, best_match  # type: ignore[import-untyped]
from jsonschema.validators import validator_for  # type: ignore[import-untyped]

from integration_bus.errors import ConfigError, MappingError
from integration_bus.mapping.conform import Conformer, Plan, plan_for
from integration_bus.mapping.shapes import Shape, from_schema
from integration_bus.mapping.suggest import did_you_mean

__all__ = ["SCHEMA_REF", "LoadedSchema", "SchemaStore"]

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
    detailed: jsonschema.protocols.Validator
    fast: Callable[[Any], Any] | None

    @property
    def conform(self) -> Conformer:
        """Conform a document to this schema (see :mod:`.conform`)."""
        return self.plan.conform

    def validate(self, document: Any) -> None:
        """Raise MappingError (field = JSON path of the first problem) if ``document`` is
        invalid."""
        if self.fast is not None:
            try:
                self.fast(document)
                return
            except fastjsonschema.JsonSchemaException:
                pass
        error = best_match(self.detailed.iter_errors(document))
        if error is None:
            return
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise MappingError(f"does not match schema {self.ref}: {error.message}",
                           field=field.lstrip(".") or "(document)", schema=self.ref,
                           hint="schema rule: " +
                                "/".join(str(p) for p in error.absolute_schema_path))

    def validate_detailed(self, document: Any) -> None:
        """Validate with jsonschema only (used by the benchmark and tests to compare)."""
        error = best_match(self.detailed.iter_errors(document))
        if error is not None:
            raise MappingError(f"does not match schema {self.ref}: {error.message}")


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
                              hint=did_you_mean(ref, self._index()) or
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
        _refuse_remote_refs(schema, file)
        cls = validator_for(schema)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            raise ConfigError(f"invalid JSON Schema: {exc.message}", file=file,
                              field=where or None) from exc
        detailed = cls(schema, format_checker=cls.FORMAT_CHECKER)
        fast = None
        if self.compiled:
            try:
                fast = fastjsonschema.compile(schema, use_default=False, use_formats=True)
            except (fastjsonschema.JsonSchemaDefinitionException, ValueError, TypeError):
                fast = None  # a draft or keyword fastjsonschema lacks: jsonschema alone is used
        return LoadedSchema(ref, file, schema, plan_for(schema), from_schema(schema),
                            detailed, fast)


def _refuse_remote_refs(schema: Any, file: str) -> None:
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                raise ConfigError(f"$ref {ref!r} points outside this schema", file=file,
                                  hint="copy the definition into $defs; schemas are self-contained")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
