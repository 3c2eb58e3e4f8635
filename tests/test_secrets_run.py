"""Passwords in the ERP URL, the AMQP URL and the store URL never show: a real ``bus run`` (debug
logs) on RabbitMQ with its own user, PostgreSQL with its own role, and the fake ERP over HTTP
behind basic auth taken from the URL's user-info, where every posting fails and dead-letters.
Checked: every log line, ``/metrics``, ``bus trace``, ``bus dlq show/list/groups/export/audit``,
and the rows the store wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from connectors.soap_erp.fakeerp import ErpServer, ErpState, FaultPlan, Injection
from integration_bus.cli import cli
from integration_bus.store import Store
from tests.conftest import PG_ADMIN_URL, _rabbitmqctl, _require, fresh_vhost
from tests.soap_erp.support import POSTING_TYPE, posting, project, sink_yaml
from tests.support.probe import wait_for
from tests.support.services import free_port

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
TOKEN = uuid.uuid4().hex[:10]
AMQP_PASSWORD, PG_PASSWORD, ERP_PASSWORD = (f"{kind}-{TOKEN}-pw" for kind in
                                            ("Amqp", "Pg", "Erp"))
PASSWORDS = (AMQP_PASSWORD, PG_PASSWORD, ERP_PASSWORD)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A fresh vhost and a RabbitMQ user of its own with a password (deleted afterwards)."""
    user = f"bus-sec-{TOKEN}"
    with fresh_vhost() as guest_url:
        vhost = guest_url.rsplit("/", 1)[1]
        _rabbitmqctl("add_user", user, AMQP_PASSWORD)
        try:
            _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
            yield f"amqp://{user}:${{AMQP_PASSWORD}}@127.0.0.1:5672/{vhost}"
        finally:
            _rabbitmqctl("delete_user", user)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database owned by a role with a password (trust auth accepts the URL as given)."""
    _require("PostgreSQL", "127.0.0.1", 5432)
    role, name = f"bus_sec_{TOKEN}", f"bus_sec_{TOKEN}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PG_PASSWORD}'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER {role}')
    try:
        yield f"postgresql+psycopg://{role}:{PG_PASSWORD}@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def write_project(root: Path, amqp: str, store: str, erp_port: int) -> Path:
    project(root)
    erp = sink_yaml(f"http://erp-user:${{ERP_PASSWORD}}@127.0.0.1:{erp_port}/erp")
    (root / "config" / "bus.yaml").write_text(f"""
broker: {{url: "{amqp}", retry_tiers: [100ms]}}
store: {{url: "{store}"}}
sinks:{erp}
routes:
  postings:
    from: [{POSTING_TYPE}]
    to: [erp]
    retry: {{max_attempts: 2, initial_delay: 100ms}}
""")
    (root / "posting.json").write_text(json.dumps(posting(1).payload))
    return root / "config"


def test_passwords_in_urls_never_show_in_a_run_that_fails_and_dead_letters(
        tmp_path: Path, amqp_url: str, pg_url: str) -> None:
    env = {**os.environ, "AMQP_PASSWORD": AMQP_PASSWORD, "ERP_PASSWORD": ERP_PASSWORD,
           "BUS_LOG_LEVEL": "debug"}
    # Given the ERP answers every posting with HTTP 500, behind basic auth
    with ErpServer(ErpState(), plan=FaultPlan([Injection(mode="http_500")]),
                   basic=("erp-user", ERP_PASSWORD)) as erp:
        config_dir = write_project(tmp_path, amqp_url, pg_url, erp.port)
        metrics_port = free_port()
        log_path = tmp_path / "run.log"
        upgraded = CliRunner().invoke(cli, ["db", "upgrade", "--config-dir", str(config_dir)],
                                      env=env)
        assert upgraded.exit_code == 0, upgraded.output
        with log_path.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "integration_bus", "run",
                                     "--config-dir", str(config_dir), "--metrics-port",
                                     str(metrics_port)], cwd=REPO, stdout=log, stderr=log,
                                    env=env)
            try:
                # When a posting is sent, fails twice and is dead-lettered
                sent = CliRunner().invoke(cli, ["send", "--config-dir", str(config_dir),
                                                "--type", POSTING_TYPE,
                                                str(tmp_path / "posting.json")], env=env)
                assert sent.exit_code == 0, sent.output
                envelope_id = sent.output.split()[0]
                store = Store.open(pg_url, migrate=False)
                try:
                    wait_for(lambda: len(store.dead_letters()) == 1, timeout=60,
                             message="the posting dead-lettered")
                finally:
                    store.close()
                metrics = _scrape(metrics_port, "soap_erp_calls_total")
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(60) == 0, log_path.read_text()[-3000:]
    # Then nothing shows a password...
    runner = CliRunner()
    shown = {"log": log_path.read_text(), "metrics": metrics}
    for name, args in (("trace", ["trace", envelope_id]),
                       ("trace --json", ["trace", envelope_id, "--json"]),
                       ("show --json", ["dlq", "show", envelope_id, "--json"]),
                       ("show", ["dlq", "show", envelope_id]),
                       ("list --json", ["dlq", "list", "--json"]),
                       ("groups", ["dlq", "groups"]),
                       ("export", ["dlq", "export"]),
                       ("export csv", ["dlq", "export", "--format", "csv"]),
                       ("audit --json", ["dlq", "audit", "--json"])):
        split = 2 if args[0] == "dlq" else 1  # --config-dir goes after the (sub)command
        result = runner.invoke(cli, [*args[:split], "--config-dir", str(config_dir),
                                     *args[split:]], env=env)
        assert result.exit_code == 0, (name, result.output)
        shown[name] = result.output
    shown["stored"] = _dump(pg_url)
    for name, text in shown.items():
        for password in PASSWORDS:
            assert password not in text, (name, password)
    # ...though each place did get the URL, the failure and the traceback
    endpoint = f"http://erp-user:***@127.0.0.1:{erp.port}/erp"
    assert f'endpoint="{endpoint}"' in metrics
    assert endpoint in shown["log"] and "sink.failed" in shown["log"]
    letter = json.loads(shown["show --json"])
    assert "HTTP 500" in letter["message"] and len(letter["attempts"]) == 2
    assert "ErpUnavailable" in letter["traceback"] and endpoint in letter["traceback"]
    assert endpoint in shown["trace --json"] and "dead_lettered" in shown["trace"]


def _scrape(port: int, wanted: str) -> str:
    found: list[str] = []

    def scraped() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                found[:] = [r.read().decode()]
        except OSError:
            return False
        return wanted in found[0]

    wait_for(scraped, timeout=30, message=f"{wanted} on /metrics")
    return found[0]


def _dump(url: str) -> str:
    """Every row the store wrote, as text."""
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as conn:
        return "\n".join(str(conn.execute(f"SELECT * FROM {table}").fetchall())
                         for table in ("journal", "dead_letters", "dlq_audit", "outbox",
                                       "idempotency_ledger", "cursors"))
