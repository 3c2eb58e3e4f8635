"""``bus send``, ``bus status``, ``bus trace``, ``bus lint``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import click
import orjson
from rich.table import Table

from integration_bus.cli.options import EXIT_FAILURE, EXIT_USAGE, config_dir_option, handle_errors
from integration_bus.cli.summary import console, plain, route_rows, route_table
from integration_bus.envelope import Envelope
from integration_bus.errors import BusError, ConfigError, EnvelopeError, UnroutableError
from integration_bus.redact import known
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.settings import Config, load_config
from integration_bus.store import OutboxItem
from integration_bus.topology import INGRESS_EXCHANGE


@click.command("send")
@config_dir_option
@click.option("--type", "message_type", required=True, help="message type, e.g. order.created")
@click.option("--key", "idempotency_key", help="idempotency key (default: the envelope id)")
@click.argument("file", type=click.File("rb"), default="-")
@handle_errors
def send_command(config_dir: Path, message_type: str, idempotency_key: str | None,
                 file: IO[bytes]) -> None:
    """Publish one JSON document (FILE or stdin) as the payload of a new envelope.

    Exits 1 if no route takes the type. On RabbitMQ it returns once the broker confirmed; in
    embedded mode the envelope goes to the store's outbox for the running bus to publish.
    """
    raw = file.read()
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not JSON: {exc}", file=getattr(file, "name", "-")) from exc
    envelope = Envelope.create(message_type, payload, source="cli",
                               idempotency_key=idempotency_key)
    # Only what the command needs: the store in embedded mode (never migrated here), the
    # broker's topology otherwise.
    with contextlib.closing(Bus.from_config_dir(config_dir, migrate=False)) as bus:
        if bus.transport.embedded:
            if not bus.topology.routes_for(message_type):
                raise UnroutableError(f"no route takes message type {message_type!r}",
                                      hint="routes take: " + ", ".join(
                                          p for r in bus.topology.routes for p in r.patterns))
            bus.store.outbox_add([OutboxItem(INGRESS_EXCHANGE, message_type, envelope)],
                                 reason="send")
            click.echo(f"{envelope.id} queued in the outbox (embedded mode: a running "
                       "`bus run` publishes it)")
            return
        bus.transport.declare(bus.topology)
        publisher = bus.publisher()
        try:
            publisher.publish(envelope)
        finally:
            publisher.close()
    click.echo(f"{envelope.id} published and confirmed")


@click.command("status")
@config_dir_option
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def status_command(config_dir: Path, as_json: bool) -> None:
    """Per route: queue depth, consumers, in retry, dead letters, journal counts; per source:
    input refused as a whole (quarantined, refused, duplicate files; webhooks answered 4xx),
    with the newest names."""
    with Bus.from_config_dir(config_dir, migrate=False) as bus:
        rows = route_rows(bus)
        rejections = [r.to_dict() for r in bus.store.source_rejections()]
        mode = "embedded" if bus.transport.embedded else "rabbitmq"
    if as_json:
        click.echo(json.dumps({"mode": mode, "routes": rows, "source_rejections": rejections},
                              indent=2))
        return
    out = console()
    out.print(route_table(rows, title=f"routes ({mode})"))
    if mode == "embedded":
        click.echo("embedded mode: queue depths live inside the running `bus run` process; "
                   "journal and dead-letter counts are shown.")
    if rejections:
        out.print(rejection_table(rejections))
    else:
        click.echo("source rejections: none")


def rejection_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="source rejections (input refused at a source; bus dlq list "
                        "--source NAME shows those dead-lettered)")
    for column in ("source", "reason", "count", "last", "newest"):
        table.add_column(column, no_wrap=column in ("count", "last"),
                         overflow="fold", justify="right" if column == "count" else "left")
    for r in rows:
        table.add_row(plain(r["source"]), plain(r["reason"]), str(r["count"]),
                      (r["last_at"] or "")[:19], plain(", ".join(r["newest"])))
    return table


@click.command("trace")
@config_dir_option
@click.argument("envelope_id", required=False)
@click.option("--key", "business_key", metavar="KEY",
              help="every envelope of one business key (e.g. an order number) and the flows "
                   "they belong to, instead of one envelope")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def trace_command(config_dir: Path, envelope_id: str | None, business_key: str | None,
                  as_json: bool) -> None:
    """An envelope's journal (received, delivered, retried, dead-lettered, duplicate...) and
    the flow around it: the envelopes that led to it and those it caused, across routes.
    With --key, every envelope of one business key. Personal data masked, as in
    ``bus dlq show``."""
    from integration_bus.cli.dlq import console_for

    if (envelope_id is None) == (business_key is None):
        click.echo("error: give an envelope id or --key KEY (one of them)", err=True)
        sys.exit(EXIT_USAGE)
    if business_key is not None:
        with Bus.from_config_dir(config_dir, migrate=False) as bus:
            found = console_for(bus).of_key(business_key)
        _print_key(business_key, found, as_json)
        return
    assert envelope_id is not None
    with Bus.from_config_dir(config_dir, migrate=False) as bus:
        console_ = console_for(bus)
        events, dead = console_.trace(envelope_id)
        family = console_.lineage(envelope_id)
    if not events and not dead:
        click.echo(f"no journal entries for {envelope_id}", err=True)
        sys.exit(EXIT_FAILURE)
    if as_json:
        click.echo(json.dumps({"events": events, "dead_letters": dead, **family},
                              default=str, indent=2))
        return
    table = Table(title=f"journal of {envelope_id}")
    for column in ("at", "event", "route", "sink", "attempt", "detail"):
        table.add_column(column)
    for event in events:
        table.add_row(str(event["at"]), event["event"], event["route"] or "",
                      event["sink"] or "", str(event["attempt"]),
                      json.dumps(event["detail"], default=str) if event["detail"] else "")
    out = console()
    out.print(table)
    for letter in dead:
        out.print(f"dead letter {letter['id']}: {letter['error_type']}: {letter['message']}")
    if family["ancestors"] or family["descendants"]:
        out.print(_flow_table(f"flow of {envelope_id}",
                              [*family["ancestors"], None, *family["descendants"]],
                              envelope_id))


def _print_key(key: str, found: list[dict[str, Any]], as_json: bool) -> None:
    if not found:
        click.echo(f"no envelope with key {key!r} in the journal", err=True)
        sys.exit(EXIT_FAILURE)
    if as_json:
        click.echo(json.dumps({"key": key, "envelopes": found}, default=str, indent=2))
        return
    console().print(_flow_table(f"envelopes of key {key}", found, None))


def _flow_table(title: str, rows: Sequence[dict[str, Any] | None], this: str | None) -> Table:
    """One row per envelope: id, type, routes, what happened (``None`` marks ``this``)."""
    table = Table(title=title)
    for column in ("first seen", "envelope", "type", "routes", "events"):
        table.add_column(column)
    for row in rows:
        if row is None:
            table.add_row("", f"{this} (this one)", "", "", "")
            continue
        events = ", ".join(f"{e['event']}@{e['route']}" + (f"->{e['sink']}" if e["sink"] else "")
                           for e in row["events"] if e["event"] != "received")
        table.add_row(str(row["first_at"] or ""), row["envelope_id"], row["type"] or "",
                      ", ".join(row["routes"]), events)
    return table


@click.command("lint")
@config_dir_option
@click.option("--build", is_flag=True,
              help="also build every source and sink, as the bus does at start-up: layouts, "
                   "WSDLs, folders and tables they name are loaded and checked (on a scratch "
                   "store: never the configured store or the broker)")
@handle_errors
def lint_command(config_dir: Path, build: bool) -> None:
    """Check bus.yaml (and the mappings it names) without touching broker or store."""
    registry = Registry.from_entry_points()
    try:
        config = load_config(config_dir, registry)
        bus = Bus(config, registry=registry)
        bus.pipelines()
    except ConfigError as exc:
        click.echo(known().scrub(str(exc)), err=True)
        sys.exit(EXIT_USAGE)
    file_problems = [] if build else _lint_files(config, registry)  # --build loads them all
    for file_problem in file_problems:
        click.echo(str(file_problem), err=True)
    if file_problems:
        sys.exit(EXIT_USAGE)
    if build:
        with tempfile.TemporaryDirectory(prefix="bus-lint-") as scratch:
            store = config.settings.store.model_copy(
                update={"url": f"sqlite:///{Path(scratch) / 'lint.db'}"})
            settings = config.settings.model_copy(update={"store": store})
            scratch_bus = Bus(dataclasses.replace(config, settings=settings), registry=registry)
            try:
                problems = _build_instances(scratch_bus)
            finally:
                scratch_bus.close()
        for problem in problems:
            click.echo(known().scrub(str(problem)), err=True)
        if problems:
            sys.exit(EXIT_USAGE)
    warnings = _warnings(bus)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"{config.file}: ok ({len(config.settings.routes)} routes, "
               f"{len(config.sources)} sources, {len(config.sinks)} sinks"
               f"{f', {len(warnings)} warning(s)' if warnings else ''})")


def _lint_files(config: Config, registry: Registry) -> list[ConfigError]:
    """The files each source and sink names (layouts, WSDLs...), checked by its connector's
    ``lint`` hook without building it."""
    problems: list[ConfigError] = []
    for section, instances in (("sources", config.sources), ("sinks", config.sinks)):
        for name, instance in instances.items():
            check = registry.get(instance.connector).lint
            if check is None:
                continue
            try:
                check(instance.config, lambda path: config.resolve(path))
            except ConfigError as exc:
                exc.with_context(instance=f"{section}.{name}")
                problems.append(exc)
    return problems


def _build_instances(bus: Bus) -> list[BusError]:
    """Build (and close) every source and sink; each refusal located in bus.yaml."""
    from integration_bus.settings.yamlsource import load_yaml

    located = load_yaml(bus.config.file)
    problems: list[BusError] = []
    for section, names, build in (("sources", bus.config.sources, bus.source),
                                  ("sinks", bus.config.sinks, bus.sink)):
        for name in names:
            try:
                build(name).close()
            except ConfigError as exc:
                field = str(exc.context.get("field") or "")
                other = exc.context.get("file")
                if other and exc.context.get("line") and Path(other) != bus.config.file:
                    # a problem inside another file (a layout, a WSDL): it names its own line
                    problems.append(exc.with_context(instance=f"{section}.{name}"))
                    continue
                message = f"{exc.message}: {other}" if other else exc.message
                path = (section, name, *_field_path(field))
                problems.append(located.error(path, message, hint=exc.context.get("hint")))
            except (BusError, OSError) as exc:
                problems.append(located.error((section, name),
                                              f"cannot build it: {type(exc).__name__}: {exc}"))
    return problems


def _field_path(field: str) -> list[str | int]:
    """``inboxes[0].path`` -> ``["inboxes", 0, "path"]``."""
    out: list[str | int] = []
    for part in field.replace("]", "").replace("[", ".").split("."):
        if part:
            out.append(int(part) if part.isdigit() else part)
    return out


def _warnings(bus: Bus) -> list[str]:
    out = []
    used = {s for r in bus.config.settings.routes.values() for s in r.to}
    for name, instance in bus.config.sinks.items():  # sinks a sink delivers through
        refers = getattr(instance.config, "sinks_used", None)
        for field, other in (refers() if callable(refers) else []):
            used.add(other)
            if other not in bus.config.sinks:
                out.append(f"sink {name!r} {field} names {other!r}, which is not a sink")
    out += [f"sink {name!r} is not used by any route" for name in bus.config.sinks
            if name not in used]
    for name, instance in bus.config.sources.items():
        message_type: Any = getattr(instance.config, "type", None)
        if isinstance(message_type, str) and not bus.topology.routes_for(message_type):
            out.append(f"source {name!r} publishes {message_type!r}, which no route takes "
                       "(its messages would be dead-lettered as unroutable)")
    return out


@click.group("schema")
def schema_group() -> None:
    """JSON Schemas of the file formats (bus.yaml, mappings, sidecar tests), for editors."""


@schema_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@handle_errors
def schema_export_command(directory: Path) -> None:
    """Write bus.schema.json, mapping.schema.json and mapping-test.schema.json into DIRECTORY."""
    from integration_bus.cli.mapping import export_schemas
    from integration_bus.settings.schema import bus_config_schema

    registry = Registry.from_entry_points()
    for path in export_schemas(directory,
                               extra={"bus.schema.json": lambda: bus_config_schema(registry)}):
        click.echo(f"wrote {path}")
