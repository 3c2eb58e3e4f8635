"""Watching in embedded mode: where /metrics, /health and /ready listen (flags and
``BUS_METRICS_HOST`` over bus.yaml), what /ready says about the parts of a process, and
``bus status`` listing input refused at a source."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from integration_bus.cli import cli
from integration_bus.envelope import Envelope
from integration_bus.metrics import ulid_seconds
from integration_bus.runtime import Bus
from integration_bus.watch import WatchCollector
from integration_bus.web.metrics import serve_metrics
from tests.conftest import write_config
from tests.support.probe import wait_for
from tests.support.services import free_port

REPO = Path(__file__).resolve().parent.parent


def http(host: str, port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def project(root: Path, metrics: str = "") -> Path:
    (root / "in.jsonl").write_text('{"n": 1}\n{"n": 2}\n{"n": \n{"n": 3}\n')
    return write_config(root, f"""
        store: {{url: sqlite:///var/bus.db}}
        {metrics}
        sources:
          feed: {{connector: jsonl, path: in.jsonl, type: order.created}}
        sinks:
          out: {{connector: jsonl, path: var/out.jsonl}}
        routes:
          orders: {{from: [order.*], to: [out]}}
        """)


def test_bus_run_serves_where_flags_env_and_bus_yaml_say(tmp_path: Path) -> None:
    # Given a metrics section in bus.yaml, a --metrics-port flag and BUS_METRICS_HOST naming
    # another loopback address
    configured, port = free_port(), free_port()
    config_dir = project(tmp_path, f"metrics: {{host: 127.0.0.3, port: {configured}}}")
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "integration_bus", "run", "--config-dir",
                             str(config_dir), "--metrics-port", str(port)], cwd=REPO,
                            stdout=log, stderr=log,
                            env={**os.environ, "BUS_BROKER_URL": "", "BUS_METRICS_HOST":
                                 "127.0.0.2"})
    try:
        # Then the flag and the environment win: it serves there, and only there, ready
        # once the source and the worker run
        wait_for(lambda: http("127.0.0.2", port, "/ready")[0] == 200, timeout=30,
                 message="ready on 127.0.0.2")
        assert http("127.0.0.1", port, "/health")[0] == 0
        assert http("127.0.0.3", configured, "/health")[0] == 0
        assert http("127.0.0.3", port, "/health")[0] == 0
        body = http("127.0.0.2", port, "/ready")[1]
        assert json.loads(body) == {"ready": True, "checks": {
            "broker": "ok", "store": "ok", "run": "ok", "source:feed": "ok", "worker:0": "ok"}}
        # (the source's rejected line is stored after its batch was published, and the
        # gauges are read from the store and the queue when scraped: wait for all of them)
        expected = [
            'bus_route_messages_total{outcome="delivered",route="orders"} 3.0',
            'bus_queue_depth{route="orders"} 0.0',
            'bus_in_retry{route="orders"} 0.0',
            # each delivery observes how old its flow is (from the ULID of its correlation id)
            'bus_flow_age_seconds_count{route="orders",sink="out"} 3.0',
            'bus_source_rejections_total{reason="dead_lettered",source="feed"} 1.0',
            'bus_dead_letters{group="', 'route="source:feed"} 1.0']
        scraped: list[str] = []

        def all_shown() -> bool:
            scraped[:] = [http("127.0.0.2", port, "/metrics")[1]]
            return all(line in scraped[0] for line in expected)

        try:
            wait_for(all_shown, timeout=30, message="the delivered and rejected in /metrics")
        except AssertionError:
            missing = [line for line in expected if line not in scraped[0]]
            raise AssertionError(f"not in /metrics: {missing}\n{scraped[0]}") from None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()
    # And `bus status` lists what the source refused, with where it came from
    result = CliRunner().invoke(cli, ["status", "--config-dir", str(config_dir), "--json"],
                                env={"BUS_BROKER_URL": ""})
    assert result.exit_code == 0, result.output
    (rejected,) = json.loads(result.stdout)["source_rejections"]
    assert (rejected["source"], rejected["reason"], rejected["count"], rejected["newest"]) == (
        "feed", "dead_lettered", 1, ["in.jsonl"])
    result = CliRunner().invoke(cli, ["status", "--config-dir", str(config_dir)],
                                env={"BUS_BROKER_URL": "", "COLUMNS": "120"})
    assert "source rejections" in result.stdout and "dead_lettered" in result.stdout


def test_ready_names_the_part_that_is_not_running(tmp_path: Path) -> None:
    # Given a bus whose worker has not started consuming yet, served on a free port
    config_dir = project(tmp_path)
    stop = threading.Event()
    with Bus.from_config_dir(config_dir, environ={"BUS_BROKER_URL": ""}) as bus:
        worker = bus.worker()
        bus.watch_worker("worker", worker)
        bus.metrics.registry.register(WatchCollector(lambda: bus.store, bus.transport,
                                                     bus.topology, bus.metrics.flow))
        port = serve_metrics(bus.metrics.registry, 0, stop, readiness=bus.readiness)
        try:
            wait_for(lambda: http("127.0.0.1", port, "/health")[0] == 200, message="served")
            status, body = http("127.0.0.1", port, "/ready")
            assert status == 503
            assert json.loads(body)["checks"] == {"broker": "ok", "store": "ok",
                                                  "worker": "not consuming: connecting"}
            # When it runs, it is ready; when it stops, it is not
            worker_stop = threading.Event()
            thread = threading.Thread(target=worker.run, args=(worker_stop,), daemon=True)
            thread.start()
            wait_for(lambda: http("127.0.0.1", port, "/ready")[0] == 200, message="ready")
            worker_stop.set()
            thread.join(30)
            assert http("127.0.0.1", port, "/ready")[0] == 503
            assert http("127.0.0.1", port, "/nothing")[0] == 404
        finally:
            stop.set()


def test_the_flow_age_comes_from_the_ulid_of_the_correlation_id() -> None:
    first = Envelope.create("order.created", {"n": 1}, source="t")
    later = first.derive("order.accepted").derive("order.sales_order")
    assert later.correlation_id == first.id
    began = ulid_seconds(later.correlation_id)
    assert began is not None
    assert abs(began - first.created_at.timestamp()) < 0.002  # ULIDs carry milliseconds
    assert ulid_seconds("W-000123") is None  # a partner's correlation id: no age
    assert ulid_seconds("01M92SQ2N5ZZQ93H0ABE0GMEW!".replace("0", "!", 1)) is None


def test_bus_yaml_alone_says_where(tmp_path: Path) -> None:
    port = free_port()
    config_dir = project(tmp_path, f"metrics: {{host: 127.0.0.3, port: {port}}}")
    log = (tmp_path / "run.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_METRICS")}
    proc = subprocess.Popen([sys.executable, "-m", "integration_bus", "worker", "--config-dir",
                             str(config_dir)], cwd=REPO, stdout=log, stderr=log,
                            env={**env, "BUS_BROKER_URL": ""})
    try:
        wait_for(lambda: http("127.0.0.3", port, "/ready")[0] == 200, timeout=30,
                 message="bus worker ready on 127.0.0.3")
        assert json.loads(http("127.0.0.3", port, "/ready")[1])["checks"]["worker"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()


@pytest.mark.rabbitmq
def test_queue_depths_read_together_over_one_connection(tmp_path: Path,
                                                        rabbitmq_url: str) -> None:
    config_dir = write_config(tmp_path, f"""
        broker: {{url: "{rabbitmq_url}"}}
        store: {{url: sqlite:///var/bus.db}}
        sinks:
          out: {{connector: jsonl, path: var/out.jsonl}}
        routes:
          first: {{from: [first.created], to: [out]}}
          second: {{from: [second.created], to: [out]}}
        """)
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        publisher = bus.publisher()
        assert publisher.publish_many(
            [Envelope.create("second.created", {"n": n}, source="t") for n in range(4)]) \
            == [None] * 4
        publisher.close()
        # a queue that does not exist, between two that do (the broker closes the channel)
        depths = bus.transport.queue_depths(["bus.route.first", "bus.route.missing",
                                             "bus.route.second"])
        assert {q: (s.messages if s else None) for q, s in depths.items()} == {
            "bus.route.first": 0, "bus.route.missing": None, "bus.route.second": 4}
