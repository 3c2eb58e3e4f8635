"""`bus worker --processes N`: N supervised worker processes side by side, on the real RabbitMQ."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import urllib.request
from pathlib import Path

import kombu
import pytest

from integration_bus.envelope import Envelope
from integration_bus.runtime import Bus
from integration_bus.topology import route_queue
from tests.conftest import write_config
from tests.support.faults import Supervised, sink_lines
from tests.support.probe import wait_for
from tests.support.services import free_port

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow, pytest.mark.faults]


def _two_free_ports() -> int:
    """A port P with P+1 free too (process i serves /metrics on P+i)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two adjacent free ports")


def _consumers(url: str, queue: str) -> int:
    with kombu.Connection(url) as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).consumer_count)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _child_pids(log: Path) -> dict[int, int]:
    """process index -> pid of the child the supervisor started last for it."""
    found: dict[int, int] = {}
    for line in log.read_bytes().splitlines():
        if b"supervisor.started" in line:
            pid = re.search(rb"pid\W+(\d+)", line)
            index = re.search(rb"process\W+(\d+)", line)
            assert pid and index, line
            found[int(index.group(1))] = int(pid.group(1))
    return found


def test_two_worker_processes_share_a_route_and_restart_on_their_own(
        tmp_path: Path, rabbitmq_url: str) -> None:
    # Given `bus worker --processes 2` with a metrics port
    config_dir = write_config(tmp_path, f"""
        broker: {{url: "{rabbitmq_url}"}}
        store: {{url: sqlite:///var/bus.db}}
        sinks: {{out: {{connector: jsonl, path: var/out.jsonl}}}}
        routes:
          orders: {{from: [order.created], to: [out]}}
        """)
    Bus.from_config_dir(config_dir, environ={}, migrate=True).open().close()
    port = _two_free_ports()
    log = tmp_path / "worker.log"
    group = Supervised([sys.executable, "-m", "integration_bus", "worker", "--processes", "2",
                        "--metrics-port", str(port), "--config-dir", str(config_dir)], log)
    out = tmp_path / "var" / "out.jsonl"
    try:
        group.start()
        # Then two processes consume the route's queue, each serving /health on its own port
        queue = route_queue("orders")
        wait_for(lambda: _consumers(rabbitmq_url, queue) == 2, timeout=60,
                 message="two consumers on the route queue")
        wait_for(lambda: _healthy(port) and _healthy(port + 1), timeout=30,
                 message=f"/health on {port} and {port + 1}")
        first = _child_pids(log)
        assert sorted(first) == [0, 1] and first[0] != first[1]
        # When one of them is killed with SIGKILL while messages flow
        envelopes = [Envelope.create("order.created", {"n": i}, source="t") for i in range(600)]
        with Bus.from_config_dir(config_dir, environ={}) as bus:
            publisher = bus.publisher()
            assert publisher.publish_many(envelopes[:300]) == [None] * 300
            os.kill(first[1], signal.SIGKILL)
            assert publisher.publish_many(envelopes[300:]) == [None] * 300
            publisher.close()
        # Then only that one is started again, and every message is delivered once
        wait_for(lambda: _child_pids(log).get(1) not in (None, first[1]), timeout=30,
                 message="process 1 restarted")
        assert _child_pids(log)[0] == first[0]
        wait_for(lambda: len(sink_lines(out)) >= 600, timeout=90, message="600 delivered")
        wait_for(lambda: _consumers(rabbitmq_url, queue) == 2, timeout=60,
                 message="two consumers again")
        keys = [line["idempotency_key"] for line in sink_lines(out)]
        assert sorted(keys) == sorted(e.idempotency_key for e in envelopes)
        # ... and SIGTERM to the supervisor stops both cleanly: exit 0, no child left
        assert group.stop() == 0
        for pid in _child_pids(log).values():
            wait_for(lambda p=pid: not _alive(p), timeout=10, message=f"child {pid} gone")
    finally:
        group.cleanup()
        for pid in _child_pids(log).values() if log.exists() else ():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose: the supervisor reaps it
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
