"""Loading mapping files: read safely, validate the format, compile every step.

Everything that can be wrong with a mapping is found here, at load, as a ConfigError naming
``file:line:col``, the field and a hint; a mapping that loads does not fail for reasons of its
own text at message time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from integration_bus.errors import ConfigError
from integration_bus.mapping.builtin_functions import default_registry
from integration_bus.mapping.compiled_mapping import CompiledMapping, MappingInfo
from integration_bus.mapping.conform import PLAIN
from integration_bus.mapping.expr_compiler import ExprCompiler, Scope
from integration_bus.mapping.field_compiler import SpecCompiler
from integration_bus.mapping.functions import (
    BindContext,
    FunctionRegistry,
    Resolver,
    XrefTable,
)
from integration_bus.mapping.grammar import Parser
from integration_bus.mapping.model import MappingFile
from integration_bus.mapping.shapes import ANY, Shape
from integration_bus.mapping.step_compiler import Step, StepCompiler
from integration_bus.mapping.validation import LoadedSchema, SchemaStore
from integration_bus.mapping.xref import Table, load_tables
from integration_bus.yamlmodel import validate_model
from integration_bus.yamlsafe import Locator, read_yaml

__all__ = ["Loader", "find_dir", "mapping_files"]


class _Recording(Mapping[str, XrefTable]):
    """The xref tables, remembering which ones a mapping used (for its version hash)."""

    def __init__(self, tables: Mapping[str, Table]) -> None:
        self._tables = tables
        self.used: set[str] = set()

    def __getitem__(self, key: str) -> XrefTable:
        table = self._tables[key]
        self.used.add(key)
        return table

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)


class Loader:
    """Loads mappings that share xref tables, schemas, resolvers and one function registry."""

    def __init__(self, *, xref_dir: Path | None, schemas_dir: Path | None,
                 resolvers: Mapping[str, Resolver] | None = None,
                 registry: FunctionRegistry | None = None) -> None:
        self.tables = load_tables(xref_dir)
        self.schemas = SchemaStore(schemas_dir)
        self.resolvers = dict(resolvers or {})
        self.registry = registry or default_registry()
        self.parser = Parser()

    def load(self, path: Path) -> CompiledMapping:
        """Load one mapping file; raises ConfigError."""
        data, locator = read_yaml(path)
        if not isinstance(data, dict):
            raise locator.error("a mapping file must be a YAML mapping", (),
                                hint="start with 'name:', 'output:' and 'steps:'")
        spec = validate_model(MappingFile, data, locator)
        tables = _Recording(self.tables)
        exprs = ExprCompiler(self.registry, BindContext(tables, self.resolvers), self.parser)
        specs = SpecCompiler(exprs, locator)
        input_schema = self._schema(spec.input.schema_, locator, ("input", "schema"))
        output_schema = self._schema(spec.output.schema_, locator, ("output", "schema"))
        input_shape: Shape = input_schema.shape if input_schema is not None else ANY
        compiler = StepCompiler(specs, self.schemas)
        steps: list[Step] = []
        shape = input_shape
        plan = output_schema.plan if output_schema is not None else PLAIN
        last = len(spec.steps) - 1
        for index, raw in enumerate(spec.steps):
            step, shape = compiler.compile(index, raw, shape, input_shape,
                                           plan if index == last else None)
            steps.append(step)
        output_key = None
        if spec.output.key is not None:  # an expression over each finished output
            output_key = specs.located(spec.output.key, ("output", "key"),
                                       Scope(shape, shape, input_shape))[1]
        name = spec.name or path.stem
        types = spec.input.type
        info = MappingInfo(
            name=name,
            file=str(path),
            version=self._version(path, tables.used, {
                *compiler.used_schemas,
                *(s.ref for s in (input_schema, output_schema) if s is not None)}),
            description=spec.description,
            input_types=(types,) if isinstance(types, str) else tuple(types or ()),
            output_type=spec.output.type,
            input_schema=input_schema,
            validate_input=spec.input.validate_,
            output_schema=output_schema,
            uses_meta="$meta" in path.read_text(encoding="utf-8"),
            output_key=output_key,
        )
        return CompiledMapping(info, steps,
                               decimal_context=exprs.needs_context or compiler.needs_context)

    def _schema(self, ref: str | None, locator: Locator,
                loc: tuple[str, ...]) -> LoadedSchema | None:
        if ref is None:
            return None
        try:
            return self.schemas.get(ref)
        except ConfigError as exc:
            if exc.context.get("file"):
                raise
            raise locator.error(exc.message, loc, hint=exc.context.get("hint")) from exc

    def _version(self, path: Path, tables: set[str], schemas: set[str]) -> str:
        """sha256 of the mapping file and the xref tables and schemas it uses (16 hex digits)."""
        digest = hashlib.sha256(path.read_bytes())
        for name in sorted(tables):
            digest.update(b"\0xref\0" + Path(self.tables[name].file).read_bytes())
        for ref in sorted(schemas):
            digest.update(b"\0schema\0" + Path(self.schemas.get(ref).file).read_bytes())
        return digest.hexdigest()[:16]


def find_dir(start: Path, name: str, levels: int = 4) -> Path | None:
    """The nearest ``name`` directory in ``start`` or up to ``levels`` folders above it."""
    current = start.resolve()
    for _ in range(levels + 1):
        candidate = current / name
        if candidate.is_dir():
            return candidate
        if current.parent == current:
            break
        current = current.parent
    return None


def mapping_files(mappings_dir: Path) -> list[Path]:
    """Mapping files under ``mappings_dir``: ``*.yaml``/``*.yml`` except sidecar tests and
    anything under ``xref/`` or a ``fixtures/`` folder."""
    out = []
    for path in sorted([*mappings_dir.rglob("*.yaml"), *mappings_dir.rglob("*.yml")]):
        relative = path.relative_to(mappings_dir).parts
        if path.stem.endswith("_test") or "xref" in relative[:-1] or "fixtures" in relative[:-1]:
            continue
        out.append(path)
    return out
