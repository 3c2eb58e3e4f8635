"""How ``bus dlq`` prints: rich tables for people, JSON lines / CSV for scripts.

Everything printed comes from data (messages, payloads, routes named by partners' input): the
console never reads markup, and styles are set on Text objects only (``summary.console``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import IO, Any

from rich.console import Group
from rich.padding import Padding
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from integration_bus.cli.summary import console, plain
from integration_bus.deadletters.console import pretty
from integration_bus.deadletters.replay import Preview


def _when(value: Any) -> str:
    return str(value)[:19] if value is not None else ""


def _short(text: str | None, width: int = 60) -> str:
    text = (text or "").splitlines()[0] if text else ""
    return text if len(text) <= width else text[:width - 1] + "…"


def _where(ref: Any) -> str:
    if isinstance(ref, dict) and "file" in ref:
        return f"{ref['file']}:{ref.get('line', '?')}"
    return "" if ref is None else json.dumps(ref)


#: below this many columns ``bus dlq list`` prints each dead letter as a short block of
#: lines instead of a table: eight columns cannot share fewer without squeezing some to nothing
WIDE = 160

_REF_KEYS = ("shop", "topic", "event_id", "delivery_id", "order_id", "operation", "position")


def _source_label(row: dict[str, Any]) -> str:
    """Where the input came from, short: ``file:line`` for files; a webhook's shop, topic and
    event id (not its body digest); else the reference's first few values."""
    ref = row.get("source_ref")
    if isinstance(ref, dict):
        if "file" in ref:
            return _where(ref)
        known = [str(ref[k]) for k in _REF_KEYS if ref.get(k) not in (None, "")]
        if known:
            return " ".join(known[:3])
        return " ".join(f"{k}={v}" for k, v in list(ref.items())[:3])
    return _where(ref) if ref is not None else (row.get("source") or "")


def print_list(rows: Sequence[dict[str, Any]], *, total: int, page: int, limit: int) -> None:
    """The dead letters of one page: a table on a wide terminal, a block per letter on a
    narrow one. Ids are always printed whole (every ``bus dlq`` command also takes any unique
    prefix of one); messages wrap instead of being cut to nothing."""
    out = console()
    title = f"dead letters ({total} match; page {page})"
    if out.width >= WIDE:
        out.print(_list_table(rows, title, out.width))
    else:
        out.print(Text(title, style="italic"))
        for r in rows:
            out.print(_list_block(r))
    if total > page * limit:
        out.print(f"more: --page {page + 1}")


def _shares(room: int, weights: Sequence[int]) -> list[int]:
    """``room`` columns shared by weight (each at least 1), summing to ``room``."""
    widths = [max(1, room * w // sum(weights)) for w in weights]
    widths[-1] += room - sum(widths)
    return widths


def _list_table(rows: Sequence[dict[str, Any]], title: str, width: int) -> Table:
    # every width set here, so rich never squeezes a column to nothing or crops the edge
    id_width = max((len(r["id"]) for r in rows), default=2)
    fixed = id_width + 19 + 9 + 3 * 8 + 1  # id, time, status; padding and rules of 8 columns
    route, step, error, message, source = _shares(max(width - fixed, 5), (2, 2, 3, 5, 3))
    table = Table(title=title)
    table.add_column("id", no_wrap=True, width=id_width)
    table.add_column("last failed", no_wrap=True, width=19)
    for name, size in (("route", route), ("step/sink", step), ("error", error),
                       ("message", message), ("source", source)):
        table.add_column(name, overflow="fold", width=size)
    table.add_column("status", no_wrap=True, width=9)
    for r in rows:
        table.add_row(plain(r["id"]), _when(r["last_failed_at"]), plain(r["route"] or "-"),
                      plain(r["step"] or r["sink"] or "-"), plain(r["error_type"]),
                      plain(_short(r["message"], 240)), plain(_source_label(r)),
                      plain(r["status"]))
    return table


def _block(head: Text, *lines: Text) -> Group:
    """A heading line and indented lines below it that wrap (long tokens fold) in place."""
    for line in (head, *lines):
        line.overflow = "fold"
    return Group(head, *(Padding(line, (0, 0, 0, 2)) for line in lines))


def _list_block(r: dict[str, Any]) -> Group:
    where = f"{r['route'] or '-'} / {r['step'] or r['sink'] or '-'}"
    source = _source_label(r)
    return _block(Text.assemble(plain(r["id"], "bold"), "  ", plain(r["status"]), "  ",
                                _when(r["last_failed_at"])),
                  Text.assemble(plain(where), "  ", plain(r["error_type"], "red")),
                  plain(_short(r["message"], 240)),
                  *([Text.assemble("from ", plain(source))] if source else []))


def print_letter(letter: dict[str, Any]) -> None:
    out = console()
    envelope = letter["envelope"]
    facts = Table.grid(padding=(0, 2))
    for name, value in (
            ("dead letter", letter["id"]), ("status", letter["status"]
                                            + (f" ({letter['status_reason']})"
                                               if letter.get("status_reason") else "")),
            ("envelope", f"{envelope.get('id')}  type {envelope.get('type')}  "
                         f"source {envelope.get('source')}"),
            ("correlation", envelope.get("correlation_id")),
            ("idempotency key", envelope.get("idempotency_key")),
            ("route / step / sink", f"{letter['route']} / {letter['step']} / {letter['sink']}"),
            ("reason", letter["reason"]), ("source ref", _where(letter["source_ref"])),
            ("first / last failure", f"{_when(letter['first_failed_at'])} / "
                                     f"{_when(letter['last_failed_at'])}"),
            ("group", letter["fingerprint"])):
        facts.add_row(Text(name, style="bold"), plain(value if value is not None else "-"))
    out.print(facts)
    if envelope.get("headers"):
        out.print(Panel(Syntax(pretty(envelope["headers"]), "json"), title="headers"))
    body = envelope.get("payload", envelope.get("raw"))
    out.print(Panel(Syntax(pretty(body), "json"), title="payload (as failed)"))
    if letter.get("edited_payload") is not None:
        out.print(Panel(Syntax(pretty(letter["edited_payload"]), "json"),
                        title="payload (edited, will be sent on replay)"))
    out.print(Panel(Text.assemble(plain(letter["error_type"], "bold red"), ": ",
                                  plain(letter["message"])), title="error"))
    if letter.get("traceback"):
        out.print(Panel(plain(letter["traceback"].rstrip()), title="traceback"))
    timeline = Table(title="attempts")
    for column in ("attempt", "at", "step/sink", "error", "message"):
        timeline.add_column(column)
    for a in letter["attempts"] or []:
        timeline.add_row(str(a.get("attempt")), _when(a.get("at")),
                         a.get("step") or a.get("sink") or "", a.get("error_type") or "",
                         _short(a.get("message"), 70))
    out.print(timeline)
    history = Table(title="replays")
    for column in ("envelope", "to route", "queued", "published", "outcome"):
        history.add_column(column)
    for r in letter["replay_history"]:
        history.add_row(r["envelope_id"], r["routing_key"], _when(r["created_at"]),
                        _when(r["published_at"]), r["error"] or r["outcome"])
    out.print(history if letter["replay_history"] else "replays: none")


def print_groups(groups: Sequence[dict[str, Any]]) -> None:
    """Failure groups: a table on a wide terminal, a block per group on a narrow one; the
    group key is printed whole (``--group`` takes it or any prefix)."""
    out = console()
    title = f"failure groups ({sum(g['count'] for g in groups)} dead letters)"
    if out.width < WIDE:
        out.print(Text(title, style="italic"))
        for g in groups:
            where = f"{g['route'] or '-'} / {g['step'] or g['sink'] or '-'}"
            out.print(_block(
                Text.assemble(plain(g["group"], "bold"), f"  {g['count']} dead letter(s)"),
                Text.assemble(plain(where), "  ", plain(g["error_type"], "red")),
                Text.assemble("e.g. ", plain(_short(g["example"], 240))),
                Text(f"seen {_when(g['first_seen'])} .. {_when(g['last_seen'])}")))
        return
    table = Table(title=title)
    table.add_column("group", no_wrap=True, min_width=16)
    table.add_column("count", no_wrap=True, justify="right")
    table.add_column("route", overflow="fold", max_width=20)
    table.add_column("step/sink", overflow="fold", max_width=20)
    table.add_column("error", overflow="fold", max_width=24)
    table.add_column("example", overflow="fold", ratio=1, min_width=24)
    table.add_column("first seen", no_wrap=True)
    table.add_column("last seen", no_wrap=True)
    for g in groups:
        table.add_row(plain(g["group"]), str(g["count"]), plain(g["route"] or "-"),
                      plain(g["step"] or g["sink"] or "-"), plain(g["error_type"]),
                      plain(_short(g["example"], 240)), _when(g["first_seen"]),
                      _when(g["last_seen"]))
    out.print(table)


def print_previews(previews: Sequence[Preview], *, total: int, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"total": total, "previews": [p.__dict__ for p in previews]},
                         default=str))
        return
    out = console()
    out.print(f"dry run: {total} dead letter(s) would be replayed; nothing is sent")
    for p in previews:
        head = Text.assemble(plain(p.id, "bold"), " → route ", plain(p.route))
        if p.error:
            out.print(Text.assemble(head, ": ", ("would fail again", "red"), ": ",
                                    plain(p.error)))
        else:
            effects = ", ".join(f"{k}: {v}" for k, v in p.effects.items())
            out.print(Text.assemble(head, f": {len(p.outputs)} output(s); ", plain(effects)))
            for output in p.outputs:
                out.print(Syntax(pretty(output), "json"))
        if p.diff:
            out.print(Syntax(p.diff, "diff"))
    if total > len(previews):
        out.print(f"… and {total - len(previews)} more")


def write_export(rows: Sequence[dict[str, Any]], fmt: str, output: IO[str]) -> None:
    if fmt == "jsonl":
        for row in rows:
            output.write(json.dumps(row, default=str) + "\n")
        return
    columns = ["id", "envelope_id", "status", "route", "step", "sink", "reason", "error_type",
               "message", "source", "source_ref", "first_failed_at", "last_failed_at",
               "replays", "payload"]
    writer = csv.DictWriter(output, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({**{c: row.get(c) for c in columns},
                         "source_ref": _where(row.get("source_ref")),
                         "payload": json.dumps(row["envelope"].get(
                             "payload", row["envelope"].get("raw")), default=str)})


def print_audit(rows: Sequence[dict[str, Any]]) -> None:
    table = Table(title="dead-letter audit (newest first)")
    for column in ("at", "actor", "role", "action", "count", "outcome", "target", "detail"):
        table.add_column(column, no_wrap=column in ("at", "actor", "role", "action"))
    for r in rows:
        detail = r["detail"] or {}
        summary = detail.get("reason") or detail.get("error") or (
            "diff recorded" if detail.get("diff") else "")
        if detail.get("unchecked"):
            summary = f"unchecked (no schema); {summary}"
        table.add_row(_when(r["at"]), r["actor"], r.get("role") or "-", r["action"],
                      str(r["count"]), r["outcome"], _short(r["target"], 50),
                      _short(str(summary), 50))
    console().print(table)
