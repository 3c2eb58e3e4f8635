"""Shared fixtures: isolated RabbitMQ vhosts and PostgreSQL databases on the shared services.

Broker and database tests never skip in CI (``CI`` set): a missing service is a failure there.
Locally they skip only when the service is truly absent.
"""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist gives its workers the controller's terminal size (80x24 without a terminal);
    # a run on one process has none, and the CLI's tables are then 140 wide, not 80
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)


@pytest.fixture(autouse=True, scope="session")
def _ports_shared_by_workers(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Under pytest-xdist, the workers note the ports free_port() hands out in one file in the
    run's shared temporary directory, so two workers never hand out the same port."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from tests.support import services

        services.PORTS_FILE = tmp_path_factory.getbasetemp().parent / "free-ports"


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    """The CLI configures structlog and the root logger (process-global): undo it after each
    test, so one test's ``bus ...`` invocation cannot change what the next one's logs look
    like."""
    import logging

    import structlog

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    structlog.reset_defaults()
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _require(service: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{service} is not reachable on {host}:{port} and CI is set: it must run")
    pytest.skip(f"{service} is not running on {host}:{port} (set CI to make this a failure)")


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def fresh_vhost() -> Iterator[str]:
    """A fresh vhost on the shared broker (its URL), deleted afterwards."""
    _require("RabbitMQ", RABBIT_HOST, RABBIT_PORT)
    vhost = f"bus-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """A fresh vhost for one test."""
    with fresh_vhost() as url:
        yield url


@pytest.fixture(scope="module")
def module_rabbitmq_url() -> Iterator[str]:
    """A fresh vhost shared by one test module (one bus start instead of one per test)."""
    with fresh_vhost() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL, dropped afterwards."""
    _require("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    name = f"bus_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bus.db'}"
    return str(request.getfixturevalue("postgres_url"))


def write_config(root: Path, text: str) -> Path:
    """Write ``root/config/bus.yaml`` (dedented) and return the config dir."""
    config_dir = root / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "bus.yaml").write_text(textwrap.dedent(text).lstrip())
    return config_dir
