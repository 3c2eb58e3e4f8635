"""How ``bus dlq`` prints: rich tables for people, JSON lines / CSV for scripts.

Everything printed comes from data (messages, payloads, routes named by partners' input): the
console never reads markup, and styles are set on Text objects only (``summary.console``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import IO, Any

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


def print_list(rows: Sequence[dict[str, Any]], *, total: int, page: int, limit: int) -> None:
    table = Table(title=f"dead letters ({total} match; page {page})")
    for column in ("id", "last failed", "route", "step/sink", "error", "message", "source",
                   "status"):
        table.add_column(column, no_wrap=column != "message")
    for r in rows:
        table.add_row(r["id"], _when(r["last_failed_at"]), r["route"] or "-",
                      r["step"] or r["sink"] or "-", r["error_type"], _short(r["message"]),
                      _where(r["source_ref"]) or (r.get("source") or ""), r["status"])
    console().print(table)
    if total > page * limit:
        console().print(f"more: --page {page + 1}")


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
    table = Table(title=f"failure groups ({sum(g['count'] for g in groups)} dead letters)")
    for column in ("group", "count", "route", "step/sink", "error", "example", "first seen",
                   "last seen"):
        table.add_column(column, no_wrap=column != "example")
    for g in groups:
        table.add_row(g["group"], str(g["count"]), g["route"] or "-",
                      g["step"] or g["sink"] or "-", g["error_type"], _short(g["example"], 50),
                      _when(g["first_seen"]), _when(g["last_seen"]))
    console().print(table)


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
