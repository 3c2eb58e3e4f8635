"""``bus db``: the store's schema on Alembic — upgrade, downgrade, current, history.

Only these commands (and ``bus run`` / ``bus worker`` / ``bus scheduler`` in embedded mode or
with ``--migrate``, and ``bus demo`` on its own store) change the schema; every other command
requires the store at the newest revision and says which command to run when it is not.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from integration_bus.cli.options import config_dir_option, handle_errors
from integration_bus.registry import Registry
from integration_bus.settings import load_config
from integration_bus.store.database import Database

__all__ = ["db_group"]


def _database(config_dir: Path) -> Database:
    config = load_config(config_dir, Registry.from_entry_points())
    store = config.settings.store
    return Database(store.url, root=config.root, pool_size=1)


def _where(db: Database) -> str:
    return db.url.render_as_string(hide_password=True)


@click.group("db")
def db_group() -> None:
    """The store's schema: upgrade, downgrade, current, history."""


@db_group.command("upgrade")
@config_dir_option
@click.argument("revision", default="head")
@handle_errors
def upgrade_command(config_dir: Path, revision: str) -> None:
    """Migrate the store up to REVISION (default: the newest). Safe to run twice, and from
    several processes at once (PostgreSQL serialises them)."""
    db = _database(config_dir)
    try:
        before = db.current_revision()
        db.upgrade(revision)
        after = db.current_revision()
    finally:
        db.close()
    if before == after:
        click.echo(f"{_where(db)} is already at {after}")
    else:
        click.echo(f"{_where(db)} upgraded from {before or 'empty'} to {after}")


@db_group.command("downgrade")
@config_dir_option
@click.argument("revision")
@handle_errors
def downgrade_command(config_dir: Path, revision: str) -> None:
    """Migrate the store down to REVISION (``base``: drop every table). Some revisions cannot
    be undone; the command then changes nothing and says so. Take a backup first."""
    db = _database(config_dir)
    try:
        before = db.current_revision()
        db.downgrade(revision)
        after = db.current_revision()
    finally:
        db.close()
    click.echo(f"{_where(db)} downgraded from {before} to {after or 'empty'}")


@db_group.command("current")
@config_dir_option
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def current_command(config_dir: Path, as_json: bool) -> None:
    """The store's revision and whether it is the newest. Exit 0 at head, 1 behind."""
    db = _database(config_dir)
    try:
        current, head = db.current_revision(), db.head_revision()
    finally:
        db.close()
    if as_json:
        click.echo(json.dumps({"store": _where(db), "current": current, "head": head,
                               "at_head": current == head}))
    elif current == head:
        click.echo(f"{current} (head)")
    else:
        click.echo(f"{current or 'empty'} (head is {head}: run `bus db upgrade`)")
    if current != head:
        raise SystemExit(1)


@db_group.command("history")
@config_dir_option
@handle_errors
def history_command(config_dir: Path) -> None:
    """Every revision, oldest first; the store's current one is marked."""
    db = _database(config_dir)
    try:
        current = db.current_revision()
    finally:
        db.close()
    for rev in Database.history():
        mark = "  <- current" if rev.revision == current else ""
        click.echo(f"{rev.revision}  {rev.title}{mark}")
