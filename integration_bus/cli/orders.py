"""``bus orders``: the order process manager's sagas — list, show (the timeline: each decision
and why), and a person's decision for an order that waits for one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from integration_bus.cli.options import config_dir_option, handle_errors
from integration_bus.cli.summary import console
from integration_bus.errors import ConfigError
from integration_bus.retail.orders.book import SagaBook, SagaRecord
from integration_bus.runtime import Bus

__all__ = ["orders_group"]

STATES = ("running", "waiting", "final")
OUTCOMES = ("fulfilled", "re_sourced", "partly_back_ordered", "partly_cancelled", "cancelled")


def _row(record: SagaRecord) -> dict[str, Any]:
    saga = record.saga
    return {"order_id": saga.order_id, "state": record.state, "outcome": record.outcome,
            "channel": saga.channel, "phase": saga.phase, "version": record.version,
            "reason": record.reason, "started_at": record.started_at.isoformat(),
            "updated_at": record.updated_at.isoformat(),
            "final_at": record.final_at.isoformat() if record.final_at else None,
            "asking": saga.asking,
            "lines": [{"line_no": ln.line_no, "sku": ln.sku, "quantity": ln.quantity,
                       "status": ln.status, "reason": ln.reason, "tried": ln.tried,
                       "allocations": [{"location": a.location, "quantity": a.quantity,
                                        "state": a.state} for a in ln.allocations]}
                      for ln in saga.lines]}


@click.group("orders")
def orders_group() -> None:
    """Orders as the order process manager drives them (route order_fulfilment)."""


@orders_group.command("list")
@config_dir_option
@click.option("--state", type=click.Choice(STATES), help="running, waiting (for a person), final")
@click.option("--outcome", type=click.Choice(OUTCOMES))
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def list_command(config_dir: Path, state: str | None, outcome: str | None, limit: int,
                 as_json: bool) -> None:
    """Orders and where their sagas stand."""
    with Bus.from_config_dir(config_dir, migrate=False) as bus:
        records = SagaBook(bus.store).list(state=state, outcome=outcome, limit=limit)
    rows = [_row(r) for r in records]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"orders ({len(rows)})")
    for column in ("order", "state", "outcome", "lines", "updated", "why"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["order_id"], row["state"], row["outcome"] or "-",
                      ", ".join(f"{ln['sku']}:{ln['status']}" for ln in row["lines"]),
                      row["updated_at"][:19], row["reason"] or "")
    console().print(table)


@orders_group.command("show")
@config_dir_option
@click.argument("order_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def show_command(config_dir: Path, order_id: str, as_json: bool) -> None:
    """An order's saga: its lines and the timeline of steps and decisions, each with why."""
    with Bus.from_config_dir(config_dir, migrate=False) as bus:
        book = SagaBook(bus.store)
        record = book.get(order_id)
        if record is None:
            raise ConfigError(f"no saga for order {order_id!r}",
                              hint="`bus orders list` shows the orders the bus has")
        timeline = book.timeline(order_id)
    row = _row(record)
    row["timeline"] = [{"at": e.at.isoformat(), "version": e.version, "step": e.step,
                        "decision": e.decision, "reason": e.reason, "detail": e.detail}
                       for e in timeline]
    if as_json:
        click.echo(json.dumps(row, indent=2))
        return
    click.echo(f"order {order_id}: {row['state']}"
               f"{' (' + row['outcome'] + ')' if row['outcome'] else ''}, channel "
               f"{row['channel']}, version {row['version']}")
    if record.saga.asking:
        asking = record.saga.asking
        click.echo(f"waiting for a person: {asking.get('reason')}\n  options: "
                   f"{', '.join(asking.get('options') or [])} "
                   f"(bus orders decide {order_id} OPTION)")
    for ln in row["lines"]:
        where = ", ".join(f"{a['quantity']}@{a['location']}" + (" released"
                          if a["state"] == "released" else "") for a in ln["allocations"])
        click.echo(f"  line {ln['line_no']}: {ln['quantity']} x {ln['sku']}: {ln['status']}"
                   f"{' from ' + where if where else ''}"
                   f"{' — ' + ln['reason'] if ln['reason'] else ''}")
    table = Table(title="timeline")
    for column in ("at", "v", "step", "decision", "why"):
        table.add_column(column)
    for e in row["timeline"]:
        table.add_row(e["at"][11:23], str(e["version"]), e["step"], e["decision"], e["reason"])
    console().print(table)


@orders_group.command("decide")
@config_dir_option
@click.argument("order_id")
@click.argument("decision", type=click.Choice(["back_order", "cancel_line", "cancel_order"]))
@handle_errors
def decide_command(config_dir: Path, order_id: str, decision: str) -> None:
    """A person's choice for an order waiting for one; replaying its dead letter continues
    the saga from there."""
    with Bus.from_config_dir(config_dir, migrate=False) as bus:
        try:
            SagaBook(bus.store).decide(order_id, decision)
        except ValueError as exc:
            raise ConfigError(f"order {order_id}: {exc}",
                              hint="`bus orders show ORDER` lists its options") from None
    reason = f"a person chose {decision}"
    click.echo(f"order {order_id}: {reason}; continue it with\n  bus dlq replay --route "
               f"order_fulfilment --error-type OrderNeedsDecision --text {order_id}")
