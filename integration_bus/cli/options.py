"""What every ``bus`` subcommand shares: the ``--config-dir`` option, the documented exit codes,
and turning bus errors into them. Subcommand modules import these from here, never from the
package (which imports every subcommand to register it)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from integration_bus.errors import BusError, ConfigError
from integration_bus.operators import AccessDenied
from integration_bus.redact import known

__all__ = ["EXIT_DENIED", "EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "config_dir_option",
           "handle_errors"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_DENIED = 0, 1, 2, 3


def config_dir_option(func: F) -> F:
    return click.option(
        "--config-dir", type=click.Path(file_okay=False, path_type=Path), default="config",
        envvar="BUS_CONFIG_DIR", show_default=True, show_envvar=True,
        help="directory holding bus.yaml (its parent holds mappings/, schemas/, var/)")(func)


def handle_errors(func: F) -> F:
    """Turn bus errors into a clear message and the documented exit code."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"error: {known().scrub(str(exc))}", err=True)
            sys.exit(EXIT_USAGE)
        except AccessDenied as exc:
            click.echo(f"not allowed: {exc}", err=True)
            sys.exit(EXIT_DENIED)
        except BusError as exc:
            click.echo(f"error: {known().scrub(str(exc))}", err=True)
            sys.exit(EXIT_FAILURE)
    return wrapper  # type: ignore[return-value]
