"""The ``bus`` command as an operator uses it: exit codes and output (CliRunner + processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from integration_bus.cli import cli
from integration_bus.runtime import Bus
from tests.conftest import write_config
from tests.support.probe import wait_for

REPO = Path(__file__).resolve().parent.parent

CONFIG = """
broker: {{url: "{url}"}}
store: {{url: sqlite:///var/bus.db}}
sinks:
  out: {{connector: jsonl, path: var/out.jsonl}}
routes:
  orders: {{from: [order.*], to: [out]}}
"""


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    return result.exit_code, result.output


@pytest.mark.rabbitmq
def test_send_trace_and_status_on_rabbitmq(tmp_path: Path, rabbitmq_url: str) -> None:
    config_dir = str(write_config(tmp_path, CONFIG.format(url=rabbitmq_url)))
    code, out = invoke("send", "--config-dir", config_dir, "--type", "order.created", "-",
                       input='{"order_id": "W-1", "total": "19.99"}')
    assert code == 0, out
    envelope_id = out.split()[0]
    assert out.strip().endswith("published and confirmed")
    code, out = invoke("status", "--config-dir", config_dir, "--json")
    assert code == 2 and "bus db upgrade" in out  # read-only commands never migrate
    assert invoke("db", "upgrade", "--config-dir", config_dir)[0] == 0
    code, out = invoke("status", "--config-dir", config_dir, "--json")
    assert code == 0, out
    (row,) = json.loads(out)["routes"]
    assert row["route"] == "orders" and row["queued"] == 1 and row["received"] == 0
    # a worker delivers it; trace and status tell the story
    with Bus.from_config_dir(Path(config_dir), environ={}) as bus:
        stop = threading.Event()
        worker = threading.Thread(target=bus.worker().run, args=(stop,))
        worker.start()
        out_file = tmp_path / "var" / "out.jsonl"
        wait_for(lambda: out_file.exists() and out_file.read_text().count("\n") == 1)
        stop.set()
        worker.join(30)
    code, out = invoke("trace", "--config-dir", config_dir, envelope_id, "--json")
    assert code == 0, out
    assert [e["event"] for e in json.loads(out)["events"]] == ["received", "delivered"]
    code, out = invoke("status", "--config-dir", config_dir)
    assert code == 0 and "orders" in out
    code, out = invoke("trace", "--config-dir", config_dir, "01NOPE")
    assert code == 1 and "no journal entries" in out


@pytest.mark.rabbitmq
def test_send_to_a_type_no_route_takes_exits_1(tmp_path: Path, rabbitmq_url: str) -> None:
    config_dir = str(write_config(tmp_path, CONFIG.format(url=rabbitmq_url)))
    code, out = invoke("send", "--config-dir", config_dir, "--type", "refund.created", "-",
                       input="{}")
    assert code == 1
    assert "no queue takes message type 'refund.created'" in out


def test_send_in_embedded_mode_goes_through_the_outbox(tmp_path: Path) -> None:
    config_dir = str(write_config(tmp_path, CONFIG.format(url="")))
    code, out = invoke("send", "--config-dir", config_dir, "--type", "refund.created", "-",
                       input="{}")
    assert code == 1 and "no route takes message type 'refund.created'" in out
    code, out = invoke("send", "--config-dir", config_dir, "--type", "order.created", "-",
                       input='{"n": 1}')
    assert code == 2 and "bus db upgrade" in out  # no store yet: `bus run` makes it
    assert invoke("db", "upgrade", "--config-dir", config_dir)[0] == 0
    code, out = invoke("send", "--config-dir", config_dir, "--type", "order.created", "-",
                       input='{"n": 1}')
    assert code == 0 and "queued in the outbox" in out
    code, out = invoke("send", "--config-dir", config_dir, "--type", "order.created", "-",
                       input="{not json")
    assert code == 1 and "not JSON" in out


def test_config_error_exits_2(tmp_path: Path) -> None:
    config_dir = str(write_config(tmp_path, CONFIG.format(url="").replace("to: [out]",
                                                                          "to: [missing]")))
    code, out = invoke("status", "--config-dir", config_dir)
    assert code == 2 and "no sink named 'missing'" in out


def test_bus_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, """
        store: {url: sqlite:///var/bus.db}
        sources:
          feed: {connector: jsonl, path: in.jsonl, type: order.created, follow: true,
                 poll_interval: 50ms}
        sinks:
          out: {connector: jsonl, path: var/out.jsonl}
        routes:
          orders: {from: [order.*], to: [out]}
        """)
    (tmp_path / "in.jsonl").write_text("".join(f'{{"n": {i}}}\n' for i in range(20)))
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "integration_bus", "run", "--config-dir",
                             str(config_dir)], cwd=REPO, stdout=log, stderr=log,
                            env={**os.environ, "BUS_BROKER_URL": ""})
    out = tmp_path / "var" / "out.jsonl"
    try:
        wait_for(lambda: out.exists() and out.read_text().count("\n") == 20, timeout=30)
        with (tmp_path / "in.jsonl").open("a") as feed:  # follow mode picks up appended lines
            feed.write('{"n": 20}\n')
        wait_for(lambda: out.read_text().count("\n") == 21, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0, (tmp_path / "run.log").read_text()


def test_bus_run_serves_prometheus_metrics(tmp_path: Path) -> None:
    import urllib.request

    from tests.support.services import free_port

    config_dir = write_config(tmp_path, """
        store: {url: sqlite:///var/bus.db}
        sources:
          feed: {connector: jsonl, path: in.jsonl, type: order.created}
        sinks:
          out: {connector: jsonl, path: var/out.jsonl}
        routes:
          orders: {from: [order.*], to: [out]}
        """)
    (tmp_path / "in.jsonl").write_text("".join(f'{{"n": {i}}}\n' for i in range(7)))
    port = free_port()
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "integration_bus", "run", "--config-dir",
                             str(config_dir), "--metrics-port", str(port)], cwd=REPO,
                            stdout=log, stderr=log, env={**os.environ, "BUS_BROKER_URL": ""})

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return ""

    try:
        wanted = 'bus_route_messages_total{outcome="delivered",route="orders"} 7.0'
        wait_for(lambda: wanted in scrape(), timeout=30, message="delivered counter at 7")
        text = scrape()
        assert 'bus_sink_deliveries_total{outcome="delivered",route="orders",sink="out"} 7.0' \
            in text
        assert 'bus_sink_delivery_seconds_count{route="orders",sink="out"} 7.0' in text
        assert "bus_worker_paused 0.0" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()
