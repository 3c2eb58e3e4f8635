"""The ``bus`` command. Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error,
3 not allowed (the operator's role does not permit the action)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
import structlog

from integration_bus import __version__
from integration_bus.cli import console, db, dlq, mapping, ops, orders, reconcile, running
from integration_bus.cli.options import config_dir_option, handle_errors
from integration_bus.redact import LogFilter, log_processor

__all__ = ["cli", "config_dir_option", "handle_errors", "main"]

def configure_logging(level: str, json_logs: bool) -> None:
    """structlog and the standard library's logging to stderr, both through the redaction
    boundary (``integration_bus.redact``): no secret, no unmasked personal data in a log line.
    Tracebacks are rendered as plain text first so they pass it too (and never show locals)."""
    root = logging.getLogger()
    before = set(root.handlers)
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(message)s")
    for handler in root.handlers:
        if handler not in before:
            handler.addFilter(LogFilter())
    renderer: Any = (structlog.processors.JSONRenderer() if json_logs
                     else structlog.dev.ConsoleRenderer(
                         colors=False, exception_formatter=structlog.dev.plain_traceback))
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info,
                    log_processor,
                    renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class BusGroup(click.Group):
    """The ``bus`` group: its own commands, then those connector plugins add (``commands`` of
    :class:`~integration_bus.connector.ConnectorPlugin`), loaded only when asked for."""

    def _plugin_commands(self) -> dict[str, click.Command]:
        from integration_bus.registry import Registry

        registry = Registry.from_entry_points()
        found: dict[str, click.Command] = {}
        for name in registry.names():
            for command in registry.get(name).commands:
                if command.name and command.name not in self.commands:
                    found.setdefault(command.name, command)
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugin_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._plugin_commands().get(cmd_name)


@click.group(cls=BusGroup)
@click.option("--log-level", default="warning", envvar="BUS_LOG_LEVEL", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--log-json", is_flag=True, envvar="BUS_LOG_JSON", help="log as JSON lines")
@click.version_option(__version__, package_name="integration-bus")
def cli(log_level: str, log_json: bool) -> None:
    """integration-bus: keep POS, ERP and web shops in step over RabbitMQ."""
    configure_logging(log_level, log_json)


def _register() -> None:
    for command in (running.run_command, running.worker_command, running.demo_command,
                    running.scheduler_command, running.serve_command, running.sim_group,
                    ops.send_command, ops.status_command, ops.trace_command, ops.lint_command,
                    mapping.mapping_group, mapping.test_command, ops.schema_group,
                    dlq.dlq_group, reconcile.reconcile_command, db.db_group,
                    console.console_command, console.users_group, orders.orders_group):
        cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="bus")
