"""The mapping language: YAML pipelines compiled once into fast, safe Python callables.

Public API::

    load_mapping(path, *, xref_dir=None, schemas_dir=None, resolvers=None) -> CompiledMapping
    load_mappings(mappings_dir, schemas_dir, *, resolvers=None) -> dict[str, CompiledMapping]
    run_sidecar_tests(paths, *, mappings_dir, schemas_dir) -> TestReport
    mapping_file_schema() -> dict        sidecar_file_schema() -> dict

A :class:`CompiledMapping` is a :class:`integration_bus.pipeline.Pipeline`: ``name``, ``version``
(content hash of the file and the xref tables and schemas it uses) and ``__call__(envelope)``.
Loading raises :class:`~integration_bus.errors.ConfigError` (file:line:col, field, hint);
running raises :class:`~integration_bus.errors.MappingError` (step, field, input path).
The language is documented in ``docs/mapping-language.md``.

How the package is laid out (a file flows down this list at load; ``*_compiler`` modules run once
at load and build the closures their ``*_closures`` partners define, which run per document)::

    loader            read a mapping file safely, validate it (model), compile every step
    model             pydantic spec of the mapping file and the sidecar test file
    step_compiler     steps: -> Step objects      step_closures   set/rename/drop/split, run time
    field_compiler    field specs -> builders     field_closures  objects, lists, $each, run time
    grammar, nodes    expression text -> syntax tree (parse)
    expr_compiler     syntax tree -> closures     call_closures   function calls (BoundCall)
    ops, values       operator and value semantics shared with the reference interpreter
    functions, fn_*   the function registry and its library (dates, numbers, text, xref/lookup)
    context           Ctx: per-call state and field access shared by compiled code and reference
    compiled_mapping  CompiledMapping: the loaded file as a route's Pipeline
    shapes, conform   document shapes for load-time field checks; values -> JSON per schema
    validation, drafts  JSON Schemas by reference and the validate step; draft detection
    check_failure     the check step's failure message
    jsonata_step, jsonata_limits  the jsonata escape hatch and its bounds
    docpath, xref, suggest  target paths; cross-reference tables; did-you-mean
    reference         a slow, obvious interpreter: the executable specification
    sidecar, pytest_plugin  NAME_test.yaml cases for `bus test` and pytest
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from integration_bus.errors import ConfigError
from integration_bus.mapping.builtin_functions import default_registry
from integration_bus.mapping.compiled_mapping import CompiledMapping
from integration_bus.mapping.functions import (
    FunctionRegistry,
    FunctionSpec,
    Resolver,
)
from integration_bus.mapping.loader import Loader, find_dir, mapping_files
from integration_bus.mapping.model import mapping_file_schema, sidecar_file_schema
from integration_bus.mapping.sidecar import CaseResult, TestReport, run_sidecar_tests

__all__ = [
    "CaseResult",
    "CompiledMapping",
    "FunctionRegistry",
    "FunctionSpec",
    "Resolver",
    "TestReport",
    "default_registry",
    "load_mapping",
    "load_mappings",
    "mapping_file_schema",
    "run_sidecar_tests",
    "sidecar_file_schema",
]


def load_mapping(path: Path | str, *, xref_dir: Path | str | None = None,
                 schemas_dir: Path | str | None = None,
                 resolvers: Mapping[str, Resolver] | None = None,
                 registry: FunctionRegistry | None = None) -> CompiledMapping:
    """Load and compile one mapping file.

    ``xref_dir`` defaults to the nearest ``xref/`` folder at or above the file's folder and
    ``schemas_dir`` to the nearest ``schemas/`` folder (pass both explicitly in production).
    ``resolvers`` are the lookups (e.g. from the store) that ``lookup`` may name.
    Raises ConfigError for anything wrong with the file, a table or a schema it uses.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError("mapping file not found", file=str(file))
    xref = Path(xref_dir) if xref_dir is not None else find_dir(file.parent, "xref")
    schemas = Path(schemas_dir) if schemas_dir is not None else find_dir(file.parent, "schemas")
    loader = Loader(xref_dir=xref, schemas_dir=schemas, resolvers=resolvers, registry=registry)
    return loader.load(file)


def load_mappings(mappings_dir: Path | str, schemas_dir: Path | str | None, *,
                  resolvers: Mapping[str, Resolver] | None = None,
                  registry: FunctionRegistry | None = None) -> dict[str, CompiledMapping]:
    """Load every mapping under ``mappings_dir`` (xref tables from ``mappings_dir/xref``).

    Returns them by mapping name; raises ConfigError on the first broken file or on two mappings
    with the same name.
    """
    root = Path(mappings_dir)
    if not root.is_dir():
        raise ConfigError("mappings directory not found", file=str(root))
    loader = Loader(xref_dir=root / "xref", schemas_dir=Path(schemas_dir) if schemas_dir else None,
                    resolvers=resolvers, registry=registry)
    out: dict[str, CompiledMapping] = {}
    for file in mapping_files(root):
        mapping = loader.load(file)
        if mapping.name in out:
            raise ConfigError(f"two mappings are named {mapping.name!r}", file=str(file),
                              field="name", hint=f"the other is {out[mapping.name].info.file}")
        out[mapping.name] = mapping
    return out
