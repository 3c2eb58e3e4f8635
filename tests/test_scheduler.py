"""The scheduled retention purge runs under celery beat (``bus scheduler``) on RabbitMQ."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from integration_bus.envelope import Envelope, new_id
from integration_bus.store import DeadLetter, Store, utcnow
from tests.conftest import write_config
from tests.support.probe import wait_for

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.rabbitmq
def test_scheduler_purges_old_handled_dead_letters(tmp_path: Path, rabbitmq_url: str) -> None:
    config_dir = write_config(tmp_path, f"""
        broker: {{url: "{rabbitmq_url}"}}
        store: {{url: sqlite:///var/bus.db}}
        dead_letters: {{retention: 1d, purge_every: 1s}}
        sinks: {{out: {{connector: log}}}}
        routes: {{orders: {{from: [order.created], to: [out]}}}}
        """)
    store = Store.open(f"sqlite:///{tmp_path / 'var' / 'bus.db'}")
    old, recent = utcnow() - timedelta(days=3), utcnow()

    def letter(failed_at: object, status: str) -> str:
        ident = new_id()
        store.add_dead_letters([DeadLetter(
            id=ident, envelope=Envelope.create("order.created", {}, source="t").to_dict(),
            route="orders", reason="error", error_type="PermanentError", message="x",
            failed_at=failed_at)])  # type: ignore[arg-type]
        with store.db.begin() as conn:
            from sqlalchemy import update

            from integration_bus.store.schema import dead_letters
            conn.execute(update(dead_letters).where(dead_letters.c.id == ident)
                         .values(status=status))
        return ident

    keep = {letter(old, "new"), letter(recent, "discarded"), letter(recent, "replayed")}
    letter(old, "discarded")
    letter(old, "replayed")
    log = (tmp_path / "scheduler.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "integration_bus", "scheduler",
                             "--config-dir", str(config_dir)], cwd=REPO, stdout=log, stderr=log,
                            env={**os.environ})
    try:
        wait_for(lambda: {r["id"] for r in store.dead_letters(status=None, limit=100)} == keep,
                 timeout=60, message="old handled dead letters purged")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    from integration_bus.store.schema import dlq_audit

    with store.db.begin() as conn:
        audit = conn.execute(dlq_audit.select()).mappings().all()
    assert any(a["actor"] == "scheduler" and a["action"] == "purge" and a["count"] == 2
               for a in audit)
    store.close()


@pytest.mark.rabbitmq
def test_a_sigterm_right_after_start_stops_the_scheduler_with_exit_0(
        tmp_path: Path, rabbitmq_url: str) -> None:
    # `docker stop` may come before celery installed its own handlers (issue 14: deploy)
    config_dir = write_config(tmp_path, f"""
        broker: {{url: "{rabbitmq_url}"}}
        store: {{url: sqlite:///var/bus.db}}
        dead_letters: {{retention: 1d}}
        sinks: {{out: {{connector: log}}}}
        routes: {{orders: {{from: [order.created], to: [out]}}}}
        """)
    Store.open(f"sqlite:///{tmp_path / 'var' / 'bus.db'}").close()  # the store at head
    log_path = tmp_path / "scheduler.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "integration_bus", "scheduler",
                                 "--config-dir", str(config_dir)], cwd=REPO, stdout=log,
                                stderr=log, env={**os.environ})
    try:
        wait_for(lambda: "scheduler running" in log_path.read_text(errors="replace"),
                 timeout=60, message="the scheduler to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_path.read_text(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
