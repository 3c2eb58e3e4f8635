"""``bus sim erp``: run the fake ERP until Ctrl-C (or ``--duration``)."""

from __future__ import annotations

import os
from collections import Counter
from decimal import Decimal
from pathlib import Path

import click

from connectors.soap_erp.fakeerp.injection import FaultPlan
from connectors.soap_erp.fakeerp.scenario import seed_scenario
from connectors.soap_erp.fakeerp.server import WSDL_DIR, ErpServer
from connectors.soap_erp.fakeerp.state import ErpState
from integration_bus.connector import stop_on_signals, wait_for_stop

__all__ = ["erp_command"]


@click.command("erp")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=click.IntRange(0, 65535))
@click.option("--scenario-stock/--no-scenario-stock", default=True, show_default=True,
              help="seed the reference scenario's stock (config/bus.yaml: the stores' and the "
                   "web warehouse's materials), as `bus demo` does")
@click.option("--materials", default=0, show_default=True, type=click.IntRange(0, 100_000),
              help="extra materials MAT-00001... seeded with stock at plant 1042 / storage "
                   "location 0001 (load tests)")
@click.option("--on-hand", default=100, show_default=True, type=click.IntRange(0),
              help="stock of each seeded material")
@click.option("--faults", "faults_file", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
              help="YAML list of fault injections (see docs/soap-erp.md)")
@click.option("--wsse-user", help="require WS-Security UsernameToken with this user")
@click.option("--password-env", default="ERP_PASSWORD", show_default=True,
              help="environment variable holding the WS-Security / basic auth password")
@click.option("--basic-user", help="require HTTP basic auth with this user")
@click.option("--duration", type=float, help="stop after N seconds (default: Ctrl-C)")
def erp_command(host: str, port: int, scenario_stock: bool, materials: int, on_hand: int,
                faults_file: Path | None,
                wsse_user: str | None, password_env: str, basic_user: str | None,
                duration: float | None) -> None:
    """A fake retail ERP on real HTTP SOAP (WSDL at ?wsdl): stock postings, sales orders,
    reservations, stock queries, documents by external reference (deduplicated), stock
    changes since a cursor; SOAP 1.1 and 1.2, document/literal and rpc/literal; fault
    injection from a YAML file. Stops on Ctrl-C, SIGTERM or after --duration, exit 0, and
    prints what it did."""
    password = os.environ.get(password_env, "")
    if (wsse_user or basic_user) and not password:
        raise click.UsageError(f"set {password_env} to the password the ERP should accept")
    state = ErpState()
    rows = seed_scenario(state) if scenario_stock else 0
    for i in range(materials):
        state.seed(f"MAT-{i + 1:05d}", "1042", "0001", Decimal(on_hand))
    plan = FaultPlan.load(faults_file) if faults_file else FaultPlan()
    server = ErpServer(state, host=host, port=port, plan=plan,
                       users={wsse_user: password} if wsse_user else None,
                       basic=(basic_user, password) if basic_user else None)
    # `kill` or Ctrl-C stops it, exit 0: handled from before its server and ready line exist
    with stop_on_signals() as stop, server:
        click.echo(f"fake ERP on {server.url} (WSDL: {server.url}?wsdl, files in {WSDL_DIR}); "
                   f"{rows} stock rows of the reference scenario and {materials} materials seeded",
                   err=True)
        wait_for_stop(stop, duration)  # in slices: the handler runs whichever thread got it
        with state.lock:
            kinds = Counter(d.type for d in state.documents.values())
        click.echo(f"documents: {state.document_count()} {dict(sorted(kinds.items()))}, "
                   "duplicates refused: "
                   f"{sum(state.duplicates.values())}, calls: {dict(state.calls)}", err=True)
