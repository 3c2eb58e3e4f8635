"""Slowloris against the webhook receiver: 300 clients that open a connection, send part of a
request head and then a byte now and then (reconnecting whenever the server drops them). The
bus runs as ``bus serve`` in its own process with an open-files limit of 256: signed webhooks
sent meanwhile are answered 2xx within a second, the process never holds 256 descriptors, and
its log stays a few lines long."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from connectors.rest_shop.fakeshop import Subscription, WebhookSender
from tests.rest_shop.support import SECRETS, wait_listening
from tests.support.probe import wait_for
from tests.support.services import free_port
from tests.support.slowloris import Slowloris

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FD_LIMIT = 256
SLOW_CLIENTS = 300
CONFIG = """
broker: {{url: "{url}"}}
store: {{url: sqlite:///var/bus.db}}
sources:
  hooks:
    connector: rest_shop
    webhooks:
      port: {port}
      http: {{max_connections: 64, header_timeout: 2s}}
      shops:
        acme: {{platform: shopify, secrets: ["${{ACME_NEW}}"]}}
sinks:
  sink: {{connector: log}}
routes:
  orders: {{from: [shop.shopify.order_created], to: [sink]}}
"""


class FdSampler:
    """The highest number of open descriptors a process was seen holding."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.01):
            try:
                self.peak = max(self.peak, len(os.listdir(f"/proc/{self.pid}/fd")))
            except OSError:
                return


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_slow_clients_cannot_starve_the_receiver_or_its_descriptors(
        tmp_path: Path, rabbitmq_url: str) -> None:
    # Given the receiver in its own process, limited to 256 open files
    port = free_port()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "bus.yaml").write_text(CONFIG.format(url=rabbitmq_url, port=port))
    log = (tmp_path / "bus.log").open("wb")
    bus = subprocess.Popen(
        [sys.executable, "-m", "integration_bus", "serve", "--migrate",
         "--config-dir", str(tmp_path / "config")], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "ACME_NEW": SECRETS["ACME_NEW"]}, preexec_fn=_limit_descriptors)
    sender = WebhookSender(retry_delays=())
    sampler = FdSampler(bus.pid)
    attack = Slowloris(port, SLOW_CLIENTS)
    try:
        wait_listening(f"http://127.0.0.1:{port}/healthz", timeout=60)
        sampler.thread.start()
        # When 300 slow clients hold partial requests open (and come back when dropped)
        attack.thread.start()
        wait_for(lambda: attack.reconnects >= SLOW_CLIENTS, timeout=30,
                 message="the slow clients were dropped and came back")
        # Then signed webhooks are still answered 2xx within a second
        sub = Subscription(f"http://127.0.0.1:{port}/webhooks/acme", "shopify",
                           SECRETS["ACME_NEW"].encode())
        attempts = []
        for n in range(5):
            attempts.append(sender.send_once(sender.delivery(
                sub, {"id": 7000 + n, "updated_at": "2024-03-01T10:00:00Z"})))
            time.sleep(0.3)  # spread over the attack (not a wait for a condition)
        assert [a.status for a in attempts] == [200] * 5, attempts
        assert max(a.answered - a.started for a in attempts) < 1.0, attempts
    finally:
        attack.stop.set()
        sampler.stop.set()
        for thread in (attack.thread, sampler.thread):
            if thread.is_alive():
                thread.join(10)
        sender.close()
        bus.send_signal(signal.SIGTERM)
        bus.wait(60)
        log.close()
    # And the process never came near its descriptor limit, and said little about it all
    assert 0 < sampler.peak < FD_LIMIT, sampler.peak
    output = (tmp_path / "bus.log").read_text(errors="replace")
    assert "Too many open files" not in output
    assert len(output) < 20_000, output[-3000:]
