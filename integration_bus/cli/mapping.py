"""CLI commands of the mapping engine, registered on the ``bus`` group by the core CLI.

``bus mapping run MAPPING (--input FILE | -)``  preview a mapping's output(s) or typed error
``bus test [PATHS]``                            run sidecar tests, summary, exit 1 on failure
``export_schemas(DIR)``                          JSON Schemas for mapping and sidecar files
                                                (``bus schema export`` adds bus.yaml)

Exit codes: 0 ok, 1 failure (a mapping error, a failed test), 2 usage or configuration error.
Folders: mappings are ``<config-dir>/../mappings`` unless ``--mappings-dir``/``BUS_MAPPINGS_DIR``,
schemas ``<config-dir>/../schemas`` unless ``--schemas-dir``/``BUS_SCHEMAS_DIR``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from integration_bus.envelope import Envelope
from integration_bus.errors import BusError, ConfigError, EnvelopeError
from integration_bus.mapping import (
    CompiledMapping,
    load_mapping,
    load_mappings,
    mapping_file_schema,
    run_sidecar_tests,
    sidecar_file_schema,
)

__all__ = ["export_schemas", "mapping_group", "output_json", "test_command"]

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
SCHEMA_FILES = {"mapping.schema.json": mapping_file_schema,
                "mapping-test.schema.json": sidecar_file_schema}


def _dir_options(func: F) -> F:
    func = click.option("--schemas-dir", type=click.Path(file_okay=False, path_type=Path),
                        envvar="BUS_SCHEMAS_DIR", show_envvar=True,
                        help="JSON Schemas folder [default: <config-dir>/../schemas]")(func)
    func = click.option("--mappings-dir", type=click.Path(file_okay=False, path_type=Path),
                        envvar="BUS_MAPPINGS_DIR", show_envvar=True,
                        help="mappings folder [default: <config-dir>/../mappings]")(func)
    return click.option("--config-dir", type=click.Path(file_okay=False, path_type=Path),
                        default="config", envvar="BUS_CONFIG_DIR", show_default=True,
                        show_envvar=True, help="directory holding bus.yaml")(func)


def _dirs(config_dir: Path, mappings_dir: Path | None,
          schemas_dir: Path | None) -> tuple[Path, Path]:
    base = config_dir.resolve().parent
    return mappings_dir or base / "mappings", schemas_dir or base / "schemas"


def output_json(value: Any) -> str:
    """JSON text of a mapping output: Decimals left by a ``number`` schema field are written as
    exact JSON numbers (never through float)."""
    def default(obj: Any) -> Any:
        if isinstance(obj, Decimal):
            return orjson.Fragment(f"{obj:f}".encode())
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    return orjson.dumps(value, default=default, option=orjson.OPT_INDENT_2).decode()


def _fail(exc: BusError) -> None:
    click.echo(f"error: {exc.error_type}: {exc}", err=True)
    sys.exit(EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE)


@click.group("mapping")
def mapping_group() -> None:
    """Work with mappings (YAML pipelines under mappings/)."""


@mapping_group.command("run")
@click.argument("mapping")
@click.argument("stdin", required=False, metavar="[-]")
@click.option("--input", "-i", "input_file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file with the input payload ('-' for standard input)")
@click.option("--type", "message_type", help="input message type [default: the mapping's]")
@click.option("--envelope", "is_envelope", is_flag=True,
              help="the input is a whole envelope (as on the wire), not just a payload")
@_dir_options
def run_command(mapping: str, stdin: str | None, input_file: Path | None, message_type: str | None,
                is_envelope: bool, config_dir: Path, mappings_dir: Path | None,
                schemas_dir: Path | None) -> None:
    """Preview MAPPING (a name or a .yaml path) on one input: print the outputs or the error."""
    if (stdin is None) == (input_file is None) or (stdin is not None and stdin != "-"):
        raise click.UsageError("give the input as --input FILE or '-' for standard input")
    mappings, schemas = _dirs(config_dir, mappings_dir, schemas_dir)
    try:
        compiled = _find_mapping(mapping, mappings, schemas)
        text = sys.stdin.read() if stdin == "-" or str(input_file) == "-" else \
            _read(input_file)
        envelope = _envelope(text, compiled, message_type, is_envelope)
        outputs = compiled(envelope)
    except BusError as exc:
        _fail(exc)
        return
    click.echo(output_json([{"type": o.type, "idempotency_key": o.idempotency_key,
                             "schema": o.schema, "payload": o.payload} for o in outputs]))
    click.echo(f"{len(outputs)} output(s) from {compiled.name} (version {compiled.version})",
               err=True)


def _read(path: Path | None) -> str:
    assert path is not None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read input: {exc}", file=str(path)) from exc


def _find_mapping(mapping: str, mappings: Path, schemas: Path) -> CompiledMapping:
    if mapping.endswith((".yaml", ".yml")):
        return load_mapping(mapping, xref_dir=mappings / "xref", schemas_dir=schemas)
    found = load_mappings(mappings, schemas)
    if mapping not in found:
        from integration_bus.suggest import closest

        raise ConfigError(f"no mapping named {mapping!r} in {mappings}",
                          hint=closest(mapping, found) or
                          "mappings: " + (", ".join(sorted(found)) or "(none)"))
    return found[mapping]


def _envelope(text: str, compiled: CompiledMapping, message_type: str | None,
              is_envelope: bool) -> Envelope:
    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise EnvelopeError(f"input is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                            hint="the input is one JSON document") from exc
    if is_envelope:
        return Envelope.from_dict(data)
    types = compiled.info.input_types
    return Envelope.create(message_type or (types[0] if types else "preview.input"), data,
                           source="bus-mapping-run", idempotency_key="preview")


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--verbose", "-v", is_flag=True, help="list passing cases too")
@_dir_options
def test_command(paths: tuple[Path, ...], verbose: bool, config_dir: Path,
                 mappings_dir: Path | None, schemas_dir: Path | None) -> None:
    """Run sidecar tests (NAME_test.yaml) in PATHS (default: every one under mappings/)."""
    mappings, schemas = _dirs(config_dir, mappings_dir, schemas_dir)
    if not paths and not mappings.is_dir():
        click.echo(f"error: mappings folder {mappings} not found", err=True)
        sys.exit(EXIT_USAGE)
    report = run_sidecar_tests(paths, mappings_dir=mappings, schemas_dir=schemas)
    for result in report.results:
        if not result.passed:
            click.echo(f"FAIL {result.title}\n     {result.message}")
        elif verbose:
            click.echo(f"ok   {result.title}")
    click.echo(report.summary())
    if report.failed or (paths and not report.results):
        sys.exit(EXIT_FAILURE)


def export_schemas(directory: Path,
                   extra: Mapping[str, Callable[[], dict[str, Any]]] | None = None) -> list[Path]:
    """Write the JSON Schemas (plus ``extra`` file name -> schema factory) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, factory in {**SCHEMA_FILES, **(extra or {})}.items():
        path = directory / name
        path.write_text(json.dumps(factory(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
