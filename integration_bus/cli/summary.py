"""Summaries shown by ``bus demo`` and ``bus status`` (rich tables or JSON)."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from integration_bus.errors import BrokerUnavailable
from integration_bus.runtime import Bus

_FATES = ("received", "delivered", "filtered", "dead_lettered", "retried", "duplicate")


def route_rows(bus: Bus) -> list[dict[str, Any]]:
    """One row per route: queue depth and consumers (from the broker), journal fates, dead
    letters waiting in the store."""
    summary = bus.store.route_summary()
    dead = bus.store.dead_letter_counts()
    waiting = bus.store.waiting_retry()
    rows = []
    for binding in bus.topology.routes:
        try:
            stats = bus.transport.queue_stats(binding.queue)
        except BrokerUnavailable:
            stats = None
        fates = summary.get(binding.route, {})
        row: dict[str, Any] = {
            "route": binding.route,
            "queue": binding.queue,
            "queued": stats.messages if stats else None,
            "consumers": (stats.consumers if stats and not bus.transport.embedded else None),
            "in_retry": waiting.get(binding.route, 0),
            "dead_letters": dead.get(binding.route, 0),
        }
        row.update({fate: fates.get(fate, 0) for fate in _FATES})
        rows.append(row)
    return rows


def demo_summary(bus: Bus, elapsed: float) -> dict[str, Any]:
    rows = route_rows(bus)
    for row in rows:
        settled = row["delivered"] + row["filtered"] + row["dead_lettered"] + row["in_retry"]
        row["balanced"] = settled == row["received"] and not row["queued"]
    rejected = bus.store.dead_letter_counts().get("", 0)
    return {
        "mode": "embedded" if bus.transport.embedded else "rabbitmq",
        "seconds": round(elapsed, 2),
        "routes": rows,
        "rejected_at_sources": rejected,
        "dead_letters_total": sum(bus.store.dead_letter_counts().values()),
        "nothing_lost": all(row["balanced"] for row in rows),
    }


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN`` (data must not move the cursor,
    clear the screen or colour the terminal)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


def plain(value: Any, style: str = "") -> Text:
    """A value from data as rich text: never read as markup, control characters shown."""
    return Text(visible("" if value is None else str(value)), style=style)


class _DataConsole(Console):
    """Prints data as it is: no markup (``[bold]``, ``[/]``, ``[link=...]`` in a message or a
    payload would crash or spoof the output), no emoji codes, control characters visible.
    Styling is done with Text objects, never with markup in strings."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(visible(text), **kwargs)


def console() -> Console:
    """The CLI's console (see _DataConsole), as wide as ``COLUMNS`` says when it is set, else
    as the terminal; it does not squeeze tables to 80 columns when output is not a terminal."""
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and int(columns) > 0 else (
        None if sys.stdout.isatty() else 140)
    return _DataConsole(width=width, markup=False, emoji=False, highlight=False)


def print_summary(summary: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    out = console()
    out.print(route_table(summary["routes"], title=f"bus demo ({summary['mode']}, "
                                                        f"{summary['seconds']} s)"))
    out.print(f"input rejected at sources (dead-lettered): {summary['rejected_at_sources']}")
    out.print(f"dead letters in the store: {summary['dead_letters_total']}")
    if "availability" in summary:  # the retail scenario's extras
        stock = Table(title="available to promise (projection)")
        for column in ("location", "sku", "on_hand", "reserved", "available"):
            stock.add_column(column, justify="left" if column in ("location", "sku")
                             else "right")
        for row in summary["availability"]:
            stock.add_row(*(row[c] or "-" for c in ("location", "sku", "on_hand", "reserved",
                                                     "available")))
        out.print(stock)
        sim = summary["simulated"]
        out.print(f"simulated: {sim['files']} POS files ({sim['sale_lines']} lines), "
                  f"{sim['orders_sent']} web orders ({sim['short_orders_sent']} short), "
                  f"{sim['returns_sent']} returns")
        erp = summary["erp"]
        out.print(f"ERP: {erp['postings']} postings, {erp['reservations']} reservations, "
                  f"{erp['sales_orders']} sales orders, {erp['repeats_absorbed']} repeats "
                  "absorbed; "
                  f"shop: {summary['shop']['inventory_levels']} inventory levels; "
                  f"store stock files: {summary['store_files']}")
        endpoint = summary["availability_endpoint"]
        body = endpoint.get("body") or {}
        out.print(f"GET {endpoint['url']}?sku={body.get('sku')}&location={body.get('location')}"
                  f" -> {endpoint.get('status', endpoint.get('error'))}: available "
                  f"{body.get('available')}, as of {body.get('as_of')} (at most "
                  f"{body.get('max_staleness_ms')} ms stale)")
        rec = summary["reconcile"]
        out.print(f"bus reconcile: {rec['error']}" if "error" in rec else
                  f"bus reconcile: {rec['mismatched']} of {rec['compared']} SKU/location pairs "
                  "differ between ERP, shop and projection")
        if "order_exceptions" in summary:
            exc = summary["order_exceptions"]
            out.print(f"order exceptions: {exc['total']} ({exc['resolved']} resolved: "
                      f"{exc['re_sourced']} re-sourced, {exc['back_ordered']} back-ordered, "
                      f"{exc['cancelled']} cancelled; {exc['waiting_for_a_person']} waiting "
                      "for a person) — bus orders list")
        if "prices" in summary:
            pr = summary["prices"]
            out.print(f"prices: {pr['shop_prices']} at the shop, {pr['store_price_files']} store "
                      f"price file(s), {pr['held_until_their_day']} held until their day")
        for group, count in sorted(summary["dead_letter_groups"].items()):
            out.print(f"dead letters {group}: {count}")
        for check, ok in summary["checks"].items():
            out.print(f"{'ok ' if ok else 'FAILED'} {check}")
    verdict = "yes" if summary["nothing_lost"] else "NO - see above"
    out.print(f"every message accounted for: {verdict}")


def route_table(rows: list[dict[str, Any]], *, title: str) -> Table:
    table = Table(title=title)
    columns = ["route", "queued", "consumers", "received", "delivered", "filtered", "retried",
               "in_retry", "dead_letters", "duplicate"]
    for column in columns:
        table.add_column(column, justify="left" if column == "route" else "right",
                         no_wrap=True)
    for row in rows:
        table.add_row(*("-" if row.get(c) is None else str(row.get(c)) for c in columns))
    return table
