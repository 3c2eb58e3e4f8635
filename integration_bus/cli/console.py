"""``bus console`` (the operators' web page) and ``bus users`` (its local logins)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import structlog

from integration_bus.cli.options import config_dir_option, handle_errors
from integration_bus.cli.running import _open_bus, migrate_option
from integration_bus.errors import ConfigError
from integration_bus.http_limits import HttpLimits
from integration_bus.operators import ROLES, os_operator
from integration_bus.runtime import Bus
from integration_bus.threads import stop_on_signals
from integration_bus.web.console.accounts import Accounts

SECRET_KEY = "console:session-secret"


def session_secret(bus: Bus) -> str:
    """``BUS_CONSOLE_SECRET`` if set, else a random secret made once and kept in the store (so
    every console process of this store accepts the same sessions, across restarts)."""
    from_env = os.environ.get("BUS_CONSOLE_SECRET")
    if from_env:
        if len(from_env) < 32:
            raise ConfigError("BUS_CONSOLE_SECRET is too short: at least 32 characters")
        return from_env
    kept = bus.store.cursor_get(SECRET_KEY)
    if kept is None:
        from integration_bus.web.console.app import new_secret

        bus.store.cursor_set(SECRET_KEY, new_secret())
        kept = bus.store.cursor_get(SECRET_KEY)
    assert kept is not None
    return kept


@click.command("console")
@config_dir_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8088, show_default=True, type=click.IntRange(0, 65535))
@click.option("--session-hours", default=8.0, show_default=True, type=click.FloatRange(0.1, 72),
              help="a login lasts this long")
@click.option("--secure-cookie", is_flag=True,
              help="mark the session cookie Secure (behind an HTTPS proxy)")
@migrate_option
@handle_errors
def console_command(config_dir: Path, host: str, port: int, session_hours: float,
                    secure_cookie: bool, migrate: bool) -> None:
    """Serve the operators' console (dead letters, overview, audit) until Ctrl-C."""
    from integration_bus.http_server import HttpServer
    from integration_bus.web.console.app import make_app

    with stop_on_signals() as stop, _open_bus(config_dir, migrate) as bus:
        if not Accounts(bus.store.db).list():
            click.echo("no console users yet: add one with `bus users add NAME --role admin`",
                       err=True)
        app = make_app(bus, secret=session_secret(bus), lifetime=int(session_hours * 3600),
                       secure_cookie=secure_cookie)
        server = HttpServer(app, host=host, port=port, limits=HttpLimits(), name="console",
                            log=structlog.get_logger("integration_bus.console"),
                            field="--port")
        server.start(stop)
        click.echo(f"console on {server.url}/ ; Ctrl-C stops", err=True)
        while not server.join(0.5):  # short joins: the main thread still takes signals
            pass


@click.group("users")
def users_group() -> None:
    """Console users: add, list, remove (admins of bus.yaml's operators only)."""


def _accounts(config_dir: Path) -> tuple[Bus, Accounts]:
    bus = Bus.from_config_dir(config_dir, migrate=False)
    return bus, Accounts(bus.store.db)


def _read_password() -> str:
    if sys.stdin.isatty():
        return str(click.prompt("password", hide_input=True, confirmation_prompt=True))
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


@users_group.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(ROLES))
@config_dir_option
@handle_errors
def users_add(name: str, role: str, config_dir: Path) -> None:
    """Add a console user; the password comes from a prompt, or the first line of stdin
    (at least 12 characters)."""
    bus, accounts = _accounts(config_dir)
    with bus:
        by = os_operator(bus.config.settings.operators, bus.config.file)
        accounts.add(name, role, _read_password(), by=by)
    click.echo(f"added {name} ({role})")


@users_group.command("list")
@config_dir_option
@handle_errors
def users_list(config_dir: Path) -> None:
    """The console users and their roles."""
    bus, accounts = _accounts(config_dir)
    with bus:
        for user in accounts.list():
            click.echo(f"{user.name}\t{user.role}\t{user.created_at:%Y-%m-%d %H:%M}")


@users_group.command("remove")
@click.argument("name")
@config_dir_option
@handle_errors
def users_remove(name: str, config_dir: Path) -> None:
    """Remove a console user (their sessions end at their next request)."""
    bus, accounts = _accounts(config_dir)
    with bus:
        accounts.remove(name, by=os_operator(bus.config.settings.operators, bus.config.file))
    click.echo(f"removed {name}")
