"""``bus reconcile``: stock per (sku, location) in the ERP, the shop and the projection."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from integration_bus.cli.options import EXIT_FAILURE, config_dir_option, handle_errors
from integration_bus.cli.summary import console, plain
from integration_bus.errors import BusError, ConfigError
from integration_bus.reconcile import ReconcileReport, reconcile_bus, write_metrics_file
from integration_bus.runtime import Bus

__all__ = ["EXIT_INCOMPLETE", "reconcile_command"]

#: a system could not be read (down, refused): nothing was compared, no metrics file written
EXIT_INCOMPLETE = 3


@click.command("reconcile")
@config_dir_option
@click.option("--erp", metavar="NAME", help="source or sink reading the ERP's stock "
                                            "[default: reconcile.erp in bus.yaml]")
@click.option("--shop", metavar="NAME", help="source or sink reading the shop's levels "
                                             "[default: reconcile.shop]")
@click.option("--location", "locations", multiple=True, metavar="CODE",
              help="a location to compare (repeatable) [default: reconcile.locations, else "
                   "every location the projection or the shop knows]")
@click.option("--sku", "skus", multiple=True, metavar="SKU",
              help="also compare this SKU (repeatable; the projection's and the shop's SKUs "
                   "always are)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--metrics-file", type=click.Path(dir_okay=False, path_type=Path),
              help="also write the gauges here (Prometheus textfile format, e.g. for "
                   "node_exporter's textfile collector: name it *.prom)")
@handle_errors
def reconcile_command(config_dir: Path, erp: str | None, shop: str | None,
                      locations: tuple[str, ...], skus: tuple[str, ...], as_json: bool,
                      metrics_file: Path | None) -> None:
    """Compare stock per SKU and location between the ERP, the shop and the projection.

    Checks, each against the ERP (the system of record): the projection's on hand and
    available (on hand - reserved), and the shop's available for the pairs it carries.

    Exit codes: 0 all agree, 1 mismatches found, 2 usage or configuration error, 3 a system
    could not be read (nothing compared; the metrics file is left as it was).
    """
    bus = Bus.from_config_dir(config_dir, migrate=False)
    try:
        report = reconcile_bus(bus, erp=erp, shop=shop, locations=locations, skus=skus)
        if metrics_file is not None:
            write_metrics_file(metrics_file, report)
    except ConfigError:
        raise
    except BusError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INCOMPLETE)
    finally:
        bus.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    if report.mismatches:
        sys.exit(EXIT_FAILURE)


def _cell(side: dict[str, Any] | None, field: str, differs: bool = False) -> Text:
    text = "-" if side is None or side.get(field) is None else str(side[field])
    return plain(text, "bold red" if differs else "")


def report_table(report: ReconcileReport) -> Table:
    """The mismatched pairs; values that differ from the ERP's are red ('-': no record)."""
    table = Table(title=f"stock mismatches: ERP {report.erp} / projection / shop {report.shop}")
    for column in ("sku", "location", "ERP on hand", "ERP avail.", "proj. on hand",
                   "proj. avail.", "shop avail.", "failed checks"):
        left = column in ("sku", "location", "failed checks")
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    for pair in report.mismatches:
        row, failed = pair.to_dict(), pair.failed
        table.add_row(
            pair.sku, pair.location, _cell(row["erp"], "on_hand"),
            _cell(row["erp"], "available"),
            _cell(row["projection"], "on_hand", "projection_on_hand" in failed),
            _cell(row["projection"], "available", "projection_available" in failed),
            _cell(row["shop"], "available", "shop_available" in failed), ", ".join(failed))
    return table


def print_report(report: ReconcileReport) -> None:
    out = console()
    where = ", ".join(report.locations) or "none"
    if report.mismatches:
        out.print(report_table(report))
        counts = ", ".join(f"{check} {n}" for check, n in report.by_check().items() if n)
        out.print(f"{report.mismatched} of {report.compared} pairs differ "
                  f"(mismatch ratio {report.ratio:.4f}; {counts}) at {where}")
        shop_only = sum(1 for m in report.mismatches if m.erp is None and m.projection is None)
        if shop_only:
            out.print(f"{shop_only} pair(s) only the shop knows: if the shop names SKUs or "
                      f"locations its own way, set stock.skus / stock.locations on "
                      f"{report.shop!r}")
    else:
        out.print(f"all {report.compared} pairs agree (mismatch ratio 0) at {where}: ERP "
                  f"{report.erp}, projection, shop {report.shop}")
