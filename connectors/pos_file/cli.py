"""``bus layout``: commands for layout authors (the pos_file connector adds them to ``bus``).

``bus layout try LAYOUT FILE`` parses and checks a sample file as the source's first pass does
and prints its records (a table, or ``--json``) or the first problem with its line, column,
field and the line itself. Exit codes: 0 the file passes, 1 it does not, 2 the layout is wrong.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connectors.pos_file.errors import LayoutError
from connectors.pos_file.layout_file import load_layout
from connectors.pos_file.trial import Trial, try_layout

__all__ = ["layout_group"]


@click.group("layout")
def layout_group() -> None:
    """Record layouts of flat files (pos_file): try one on a sample file."""


@layout_group.command("try")
@click.argument("layout", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--limit", type=click.IntRange(0, 100_000), default=20, show_default=True,
              help="records to show (every record is checked)")
def try_command(layout: Path, file: Path, as_json: bool, limit: int) -> None:
    """Parse FILE with LAYOUT: the records, or the first error with line and column."""
    try:
        compiled = load_layout(layout)
    except LayoutError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    with file.open("rb") as handle:
        trial = try_layout(compiled, handle, file=file.name, limit=limit)
    if as_json:
        click.echo(json.dumps(trial.as_json(), indent=2, ensure_ascii=False))
    else:
        _show(trial)
    sys.exit(0 if trial.ok else 1)


def _show(trial: Trial) -> None:
    out = Console(highlight=False, soft_wrap=False)
    if trial.records:
        table = Table(title=f"{trial.file} read with layout {trial.layout} (first "
                            f"{len(trial.records)} records)")
        for column in ("line", "record", "fields"):
            table.add_column(column, no_wrap=column != "fields", overflow="fold")
        for record in trial.records:
            fields = "  ".join(f"[bold]{name}[/]={escape(json.dumps(value, ensure_ascii=False))}"
                               for name, value in record.values.items())
            table.add_row(str(record.line), f"{record.record} ({record.role})", fields)
        out.print(table)
    counted = ", ".join(f"{n} {name}" for name, n in trial.counts.items()) or "no records"
    extra = [f"{trial.filler} filler"] if trial.filler else []
    extra += [f"{trial.batches} batch{'es' if trial.batches > 1 else ''}"] \
        if trial.batches else []
    extra += [f"{trial.blank} blank lines"] if trial.blank else []
    out.print(f"read: {counted}" + (f" ({', '.join(extra)})" if extra else ""))
    if trial.error is None:
        out.print(f"[green]ok[/]: structure and {trial.controls} control total(s) check out")
        return
    context = trial.error.context
    where = ", ".join(f"{key} {context[key]}" for key in ("line", "column", "field")
                      if context.get(key) is not None)
    out.print(f"[bold red]{trial.error.error_type}[/] ({where or 'the file as a whole'}): "
              f"{escape(trial.error.message)}")
    if trial.error_text is not None:  # as is, never wrapped, so the caret points right
        click.echo(trial.error_text)
        at = context.get("column")
        if isinstance(at, int) and at >= 1:
            click.echo(" " * (at - 1) + "^")
