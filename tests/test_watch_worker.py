"""Watching a real ``bus worker`` (issue 14, "Watching"): its ``/metrics`` shows queue depth,
messages in retry, dead letters per route and group and the oldest unsettled message with the
values the broker and the store hold; ``/ready`` turns 503 while its PostgreSQL store is stopped
and 200 again after it restarts. Real RabbitMQ (a fresh vhost), a private PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from integration_bus.envelope import Envelope
from integration_bus.runtime import Bus
from tests.conftest import write_config
from tests.dlq_project import make_project, order
from tests.support.probe import wait_for
from tests.support.services import PrivatePostgres, free_port

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow, pytest.mark.faults]


def configure(root: Path, broker_url: str, store_url: str) -> Path:
    make_project(root, broker_url)  # the accept_order mapping that fails on store 9999
    (root / "var" / "blocked").mkdir(parents=True)  # a sink path that is a folder: transient
    return write_config(root, f"""
        broker: {{url: "{broker_url}", batch_size: 20, retry_tiers: [10m]}}
        store: {{url: "{store_url}"}}
        sinks:
          out: {{connector: jsonl, path: var/out.jsonl}}
          blocked: {{connector: jsonl, path: var/blocked}}
        routes:
          orders:
            from: [shop.order]
            pipeline: accept_order
            to: [out]
          flaky:
            from: [flaky.created]
            to: [blocked]
            retry: {{max_attempts: 5, initial_delay: 10m}}
          parked:
            from: [parked.created]
            to: [out]
        """)


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def gauges(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = http(port, "/metrics")
    if status != 200:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(port: int, name: str, **labels: str) -> float | None:
    return gauges(port).get((name, tuple(sorted(labels.items()))))


@contextmanager
def bus_worker(config_dir: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "integration_bus", "worker", "--config-dir", str(config_dir),
             "--routes", "orders,flaky", "--metrics-port", str(port), "--migrate"],
            cwd=REPO, stdout=out, stderr=out, env={**os.environ, "BUS_METRICS_HOST": "127.0.0.1"})
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
            assert code == 0, log.read_text()


def test_metrics_and_readiness_of_a_worker(tmp_path: Path, rabbitmq_url: str) -> None:
    port = free_port()
    with PrivatePostgres(tmp_path / "pg") as pg:
        config_dir = configure(tmp_path, rabbitmq_url, pg.url)
        with Bus.from_config_dir(config_dir, environ={}) as bus:  # migrates, declares
            publisher = bus.publisher()
            # Given two orders that dead-letter (one group), one that is delivered, three
            # messages whose sink keeps failing (waiting 10 minutes in retry) and five on a
            # route no worker consumes
            sent = [order(1, "store"), order(2, "store"), order(3),
                    *(Envelope.create("flaky.created", {"n": n}, source="t") for n in range(3)),
                    *(Envelope.create("parked.created", {"n": n}, source="t") for n in range(5))]
            assert publisher.publish_many(sent) == [None] * len(sent)
            publisher.close()
            with bus_worker(config_dir, port, tmp_path / "worker.log"):
                wait_for(lambda: http(port, "/ready")[0] == 200, timeout=60,
                         message="the worker is ready")
                assert http(port, "/health") == (200, '{"status":"alive"}')
                wait_for(lambda: len(bus.store.dead_letters()) == 2
                         and bus.store.waiting_retry().get("flaky") == 3, timeout=60,
                         message="two dead letters and three in retry")
                (group,) = {d["fingerprint"] for d in bus.store.dead_letters()}
                # Then /metrics says so, from the broker and the store
                wait_for(lambda: value(port, "bus_dead_letters", route="orders",
                                       group=group) == 2, message="dead letters on /metrics")
                metrics = gauges(port)
                assert metrics[("bus_queue_depth", (("route", "parked"),))] == 5
                assert metrics[("bus_queue_depth", (("route", "orders"),))] == 0
                assert metrics[("bus_queue_depth", (("route", "flaky"),))] == 0
                assert metrics[("bus_in_retry", (("route", "flaky"),))] == 3
                assert metrics[("bus_in_retry", (("route", "orders"),))] == 0
                # settled everywhere once the worker has acked its last batch of the route
                wait_for(lambda: value(port, "bus_oldest_unsettled_seconds", route="orders") == 0,
                         message="nothing of orders held unsettled")
                # a backlog nobody takes ages (seen non-empty since the first scrape)
                wait_for(lambda: (value(port, "bus_oldest_unsettled_seconds",
                                        route="parked") or 0) >= 1,
                         message="the parked backlog ages")

                # When the store stops, the worker is not ready, and says why
                pg.stop()
                wait_for(lambda: http(port, "/ready")[0] == 503, message="not ready")
                body = http(port, "/ready")[1]
                checks = json.loads(body)["checks"]
                assert json.loads(body)["ready"] is False
                assert checks["broker"] == "ok" and checks["store"] != "ok"
                assert http(port, "/health")[0] == 200  # alive all the same
                # an order taken meanwhile is held, unsettled, and its age shows
                late = bus.publisher()  # the broker is fine
                assert late.publish_many([order(4)]) == [None]
                late.close()
                wait_for(lambda: "paused" in json.loads(http(port, "/ready")[1])["checks"]
                         .get("worker", ""), timeout=60, message="the worker pauses")
                wait_for(lambda: (value(port, "bus_oldest_unsettled_seconds",
                                        route="orders") or 0) >= 1,
                         message="the held order ages")
                # Then, once the store is back, ready again, and the held order settles
                pg.start()
                wait_for(lambda: http(port, "/ready")[0] == 200, timeout=60,
                         message="ready again")
                wait_for(lambda: value(port, "bus_oldest_unsettled_seconds",
                                       route="orders") == 0, message="the held order settled")
                assert bus.store.count_events("delivered", route="orders") == 2
