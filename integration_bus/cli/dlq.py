"""``bus dlq``: find, group, fix and replay failed messages — in bulk, audited."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import orjson
from rich.progress import Progress

from integration_bus.cli.dlq_render import (
    print_groups,
    print_letter,
    print_list,
    print_previews,
    write_export,
)
from integration_bus.cli.options import EXIT_FAILURE, EXIT_USAGE, config_dir_option, handle_errors
from integration_bus.cli.summary import console
from integration_bus.deadletters.console import ConsoleBus, DeadLetterConsole, pretty
from integration_bus.durations import parse_millis
from integration_bus.errors import RequestError
from integration_bus.liveness import holder_alive
from integration_bus.operators import os_operator
from integration_bus.relay import OutboxRelay
from integration_bus.runtime import Bus
from integration_bus.store.dead_letters import STATUSES, AmbiguousId, Selection

F = TypeVar("F", bound=Callable[..., Any])


def _moment(value: str | None) -> datetime | None:
    """ISO-8601, or a duration meaning 'that long ago' (90m, 2h, 7d)."""
    if value is None:
        return None
    try:
        return datetime.now(UTC) - timedelta(milliseconds=parse_millis(value))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a time (2026-11-27T08:00) nor an age "
                                 "(90m, 2h, 7d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def selection_options(func: F) -> F:
    options = [
        click.argument("ids", nargs=-1),
        click.option("--route"), click.option("--error-type"),
        click.option("--step", help="pipeline step or sink name"),
        click.option("--source", help="the source connector instance"),
        click.option("--since", help="failed at or after: ISO time or an age like 2h, 7d"),
        click.option("--until", help="failed before: ISO time or an age"),
        click.option("--text", help="text in the error message or the envelope (searched "
                                     "unmasked, so audited)"),
        click.option("--group", help="a failure group (fingerprint or its prefix)"),
        click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
                     help="[default: new]"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def selection(ids: tuple[str, ...], route: str | None, error_type: str | None,
              step: str | None, source: str | None, since: str | None, until: str | None,
              text: str | None, group: str | None, statuses: tuple[str, ...]) -> Selection:
    return Selection(ids=ids, route=route, error_type=error_type, step=step, source=source,
                     since=_moment(since), until=_moment(until), text=text, group=group,
                     statuses=statuses or ("new",))


def console_for(bus: Bus) -> DeadLetterConsole:
    """The console as the OS user running this process, with the role bus.yaml gives them
    (never a name passed in: the audit must say who really acted)."""
    return DeadLetterConsole(bus, os_operator(bus.config.settings.operators, bus.config.file))


def with_console(func: F) -> F:
    """Open the bus (store) and hand the command a DeadLetterConsole as ``dlq``."""
    @config_dir_option
    @functools.wraps(func)
    def wrapper(config_dir: Path, **kwargs: Any) -> Any:
        with Bus.from_config_dir(config_dir, migrate=False) as bus:
            try:
                return func(console_for(bus), **kwargs)
            except AmbiguousId as exc:  # the operator's input, not the bus, needs fixing
                click.echo(f"error: {exc}", err=True)
                sys.exit(EXIT_USAGE)
    return handle_errors(wrapper)  # type: ignore[return-value]


def _selected(kwargs: dict[str, Any]) -> Selection:
    keys = ("ids", "route", "error_type", "step", "source", "since", "until", "text", "group",
            "statuses")
    return selection(**{k: kwargs.pop(k) for k in keys})


@click.group("dlq")
def dlq_group() -> None:
    """Dead letters: list, show, group, edit, replay, discard, restore, purge, export, audit."""


@dlq_group.command("list")
@selection_options
@click.option("--limit", default=50, show_default=True)
@click.option("--page", default=1, show_default=True)
@click.option("--unmask", is_flag=True, help="show personal data unmasked (admins; audited)")
@click.option("--json", "as_json", is_flag=True)
@with_console
def list_command(dlq: DeadLetterConsole, limit: int, page: int, unmask: bool, as_json: bool,
                 **kwargs: Any) -> None:
    """Dead letters matching the filters, newest failure first."""
    sel = _selected(kwargs)
    rows, total = dlq.find(sel, limit=limit, offset=(page - 1) * limit, unmask=unmask)
    if as_json:
        click.echo(json.dumps({"total": total, "page": page, "items": rows}, default=str))
    else:
        print_list(rows, total=total, page=page, limit=limit)


@dlq_group.command("show")
@click.argument("ident")
@click.option("--unmask", is_flag=True, help="show personal data unmasked (admins; audited)")
@click.option("--json", "as_json", is_flag=True)
@with_console
def show_command(dlq: DeadLetterConsole, ident: str, unmask: bool, as_json: bool) -> None:
    """One dead letter: envelope, payload, error, traceback, attempts, source, replays."""
    letter = dlq.show(ident, unmask=unmask)
    if as_json:
        click.echo(json.dumps(letter, default=str))
    else:
        print_letter(letter)


@dlq_group.command("groups")
@selection_options
@click.option("--json", "as_json", is_flag=True)
@with_console
def groups_command(dlq: DeadLetterConsole, as_json: bool, **kwargs: Any) -> None:
    """Failures grouped by error type, normalised message, route and step."""
    groups = dlq.groups(_selected(kwargs))
    if as_json:
        click.echo(json.dumps(groups, default=str))
    else:
        print_groups(groups)


@dlq_group.command("replay")
@selection_options
@click.option("--dry-run", is_flag=True, help="run the current pipeline and show, send nothing")
@click.option("--to-route", help="send to this route instead of the one that failed")
@click.option("--rate", type=float, help="at most N messages per second")
@click.option("--force", is_flag=True,
              help="deliver even where the ledger says done (admins; audited)")
@click.option("--json", "as_json", is_flag=True)
@with_console
def replay_command(dlq: DeadLetterConsole, dry_run: bool, to_route: str | None,
                   rate: float | None, force: bool, as_json: bool, **kwargs: Any) -> None:
    """Send dead letters through their route again (crash-safe: rerun to resume)."""
    sel = _selected(kwargs)
    if not (sel.ids or any(getattr(sel, k) for k in ("route", "error_type", "step", "source",
                                                      "since", "until", "text", "group"))):
        raise click.UsageError("say what to replay: IDS, a filter or --group")
    if dry_run:
        previews, total = dlq.preview(sel, to_route=to_route)
        print_previews(previews, total=total, as_json=as_json)
        return
    bus = dlq.bus
    leftover = dlq.ids(dataclasses.replace(sel, statuses=("replaying",)))
    outcome = dlq.replay(sel, to_route=to_route, force=force)
    for ident, reason in outcome.skipped:
        click.echo(f"skipped {ident}: {reason}", err=True)
    ids = outcome.queued + leftover
    if bus.transport.embedded:
        click.echo(f"queued {len(outcome.queued)} replay(s) in the outbox (embedded mode: the "
                   "running `bus run` publishes them)")
        return
    relay = OutboxRelay(bus.store, bus.publisher, rate=rate, dead_letter_ids=ids)
    with Progress(console=console(), transient=not sys.stdout.isatty()) as progress:
        task = progress.add_task("replaying", total=len(ids))
        left = _relay_all(relay, bus, ids, lambda moved: progress.advance(task, moved))
    for holder, count in sorted(relay.taken_over.items()):
        why = "its lease ran out" if holder_alive(holder) else "its process is gone"
        click.echo(f"took over {count} outbox row(s) claimed by {holder} ({why})")
    click.echo(f"replayed {relay.published} of {len(ids)} (queued now: {len(outcome.queued)}, "
               f"resumed: {len(leftover)}, skipped: {len(outcome.skipped)}"
               f"{f', ledger rows reset: {outcome.ledger_reset}' if force else ''})")
    if left:
        holders = ", ".join(f"{n} held by {h or 'nobody'}" for h, n in sorted(left.items()))
        click.echo(f"not done: {sum(left.values())} replay(s) still unpublished ({holders}); "
                   "rerun to finish", err=True)
        sys.exit(EXIT_FAILURE)


#: how long a replay waits for rows another live relay holds (then their lease has run out)
_HELD_WAIT = timedelta(seconds=75)


def _relay_all(relay: OutboxRelay, bus: ConsoleBus, ids: list[str],
               progress: Callable[[int], None]) -> dict[str, int]:
    """Relay the outbox rows of ``ids`` until none is left unpublished: rows of a dead
    holder are taken over at once; rows a live relay holds (the running bus, another
    replay) are waited for, until they are published or their lease runs out and they are
    ours. Returns what is still unpublished at the deadline (holder -> rows)."""
    deadline = datetime.now(UTC) + _HELD_WAIT
    relay.drain(progress)
    told: set[str] = set()
    while (left := bus.store.outbox_pending(ids)) and datetime.now(UTC) < deadline:
        for holder in set(left) - told:
            click.echo(f"waiting for {left[holder]} row(s) held by {holder or 'nobody'} "
                       "(a live relay), at most until its lease runs out", err=True)
            told.add(holder)
        threading.Event().wait(0.5)
        relay.drain(progress)
    return left


_SET = re.compile(r"^([^=]+)=(.*)$", re.S)


def _set_path(document: Any, path: str, value: Any) -> Any:
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    if not parts:
        raise click.BadParameter(f"empty path in --set {path}")
    node = document
    for part in parts[:-1]:
        node = node[part] if isinstance(node, list) else node.setdefault(part, {})
    node[parts[-1]] = value
    return document


@dlq_group.command("edit")
@click.argument("ident")
@click.option("--set", "assignments", multiple=True, metavar="PATH=VALUE",
              help="set a field (VALUE is JSON, or text)")
@click.option("--patch", type=click.File("rb"), help="a JSON file: the whole new payload")
@click.option("--replay", is_flag=True, help="replay it right after a valid edit")
@with_console
def edit_command(dlq: DeadLetterConsole, ident: str, assignments: tuple[str, ...],
                 patch: IO[bytes] | None, replay: bool) -> None:
    """Fix a dead letter's payload ($EDITOR, --set or --patch); validated, diff audited.
    Admins only: an edit needs the real (unmasked) payload."""
    dlq.require("edit", ident)
    letter = dlq.show(ident, unmask=True)
    current = letter["edited_payload"] if letter["edited_payload"] is not None else \
        letter["envelope"].get("payload")
    if patch is not None:
        payload = orjson.loads(patch.read())
    elif assignments:
        payload = json.loads(json.dumps(current))
        for assignment in assignments:
            match = _SET.match(assignment)
            if not match:
                raise click.BadParameter(f"--set wants PATH=VALUE, not {assignment!r}")
            raw = match.group(2)
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            payload = _set_path(payload, match.group(1), value)
    else:
        text = click.edit(pretty(current), extension=".json")
        if text is None:
            click.echo("no change")
            return
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RequestError(f"the edited text is not JSON: {exc}") from exc
    edit = dlq.edit(ident, payload)
    click.echo(edit.diff or "no change")
    if edit.validated_against is None:
        click.echo("warning: the route has no schema: the edit was stored unchecked (audited "
                   "as such)", err=True)
    if replay:
        outcome = dlq.replay(Selection(ids=(letter["id"],)))
        click.echo(f"queued {len(outcome.queued)} replay(s)")
        if not dlq.bus.transport.embedded:
            relay = OutboxRelay(dlq.bus.store, dlq.bus.publisher, dead_letter_ids=outcome.queued)
            click.echo(f"replayed {relay.drain()}")


@dlq_group.command("discard")
@selection_options
@click.option("--reason", required=True)
@with_console
def discard_command(dlq: DeadLetterConsole, reason: str, **kwargs: Any) -> None:
    """Set dead letters aside (they stay, restorable, until purged)."""
    click.echo(f"discarded {dlq.discard(_selected(kwargs), reason)}")


@dlq_group.command("restore")
@selection_options
@click.option("--reason", required=True)
@with_console
def restore_command(dlq: DeadLetterConsole, reason: str, **kwargs: Any) -> None:
    """Bring discarded (or replayed) dead letters back to 'new'."""
    click.echo(f"restored {dlq.restore(_selected(kwargs), reason)}")


@dlq_group.command("purge")
@click.option("--older-than", required=True, help="age, e.g. 30d")
@click.option("--include-new", is_flag=True, help="also dead letters nobody has acted on")
@with_console
def purge_command(dlq: DeadLetterConsole, older_than: str, include_new: bool) -> None:
    """Delete replayed and discarded dead letters older than an age (retention)."""
    try:
        age = timedelta(milliseconds=parse_millis(older_than))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    click.echo(f"purged {dlq.purge(age, include_new=include_new)}")


@dlq_group.command("export")
@selection_options
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True)
@click.option("--output", "-o", type=click.File("w"), default="-")
@click.option("--unmask", is_flag=True, help="export personal data unmasked (admins; audited)")
@with_console
def export_command(dlq: DeadLetterConsole, fmt: str, output: IO[str], unmask: bool,
                   **kwargs: Any) -> None:
    """Write dead letters as JSON lines or CSV."""
    rows = dlq.rows_for_export(_selected(kwargs), unmask=unmask)
    write_export(rows, fmt, output)
    click.echo(f"exported {len(rows)}", err=True)


@dlq_group.command("audit")
@click.option("--limit", default=50, show_default=True)
@click.option("--action")
@click.option("--json", "as_json", is_flag=True)
@click.option("--verify", is_flag=True,
              help="check the hash chain of the whole log: exit 1 if a row was changed, "
                   "deleted, inserted or moved")
@click.option("--head", "expect_head", metavar="ID:HASH",
              help="with --verify: the head printed by an earlier --verify, to compare")
@with_console
def audit_command(dlq: DeadLetterConsole, limit: int, action: str | None,
                  as_json: bool, verify: bool, expect_head: str | None) -> None:
    """Who did what to which dead letters (with which role), and how it went."""
    if verify:
        check = dlq.verify_audit(expect_head=expect_head)
        if as_json:
            click.echo(json.dumps({"ok": check.ok, "rows": check.rows, "head": check.head,
                                   "problems": check.problems}))
        else:
            for problem in check.problems:
                click.echo(f"tampered: {problem}", err=True)
            click.echo(f"audit log {'intact' if check.ok else 'TAMPERED'}: {check.rows} rows, "
                       f"head {check.head or '-'}")
        if not check.ok:
            sys.exit(EXIT_FAILURE)
        return
    rows = dlq.audit_log(limit=limit, action=action)
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    from integration_bus.cli.dlq_render import print_audit

    print_audit(rows)

