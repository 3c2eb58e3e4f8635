"""Helpers for the rest_shop tests: a bus on a fresh RabbitMQ vhost with a webhook receiver (or
an order poll, or shop sinks), the probe sink behind a route, and the fake shop on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from connectors.rest_shop import make_plugin
from integration_bus.connector import BusError, Envelope
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from integration_bus.testing import bus_running as bus_running
from tests.support.probe import Target, probe_plugin, registry_with

SECRETS = {"ACME_NEW": "acme-new-secret-4b1d", "ACME_OLD": "acme-old-secret-9f3e",
           "WOO_SECRET": "woo-secret-77aa", "SHOP_TOKEN": "shpat-test-token"}


def webhooks_yaml(port: int, *, extra: str = "") -> str:
    return f"""
  hooks:
    connector: rest_shop
    webhooks:
      port: {port}
      max_body: 65536
      answer_within: 800ms
      shops:
        acme: {{platform: shopify, secrets: ["${{ACME_NEW}}", "${{ACME_OLD}}"]}}
        woo: {{platform: woocommerce, secrets: ["${{WOO_SECRET}}"]}}{extra}"""


def write_config(root: Path, url: str, *, sources: str = "", sinks: str = "",
                 routes: str | None = None, retry: str = "") -> Path:
    config_dir = root / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    routes = routes or f"""
  orders:
    from: ["shop.#"]
    to: [probe]{retry}"""
    text = f"""broker: {{url: "{url}", retry_tiers: [200ms, 1s, 5s]}}
store: {{url: sqlite:///var/bus.db}}
sources:{sources or " {}"}
sinks:
  probe: {{connector: probe}}{sinks}
routes:{routes}
"""
    (config_dir / "bus.yaml").write_text(text)
    return config_dir


def open_bus(config_dir: Path, target: Target, registry: Registry | None = None) -> Bus:
    registry = registry or registry_with(probe_plugin(target), make_plugin())
    return Bus(load_config(config_dir, registry, SECRETS), registry=registry).open()


def wait_listening(url: str, timeout: float = 20.0) -> None:
    """Wait until ``url`` answers an HTTP GET (a condition with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing answers at {url} after {timeout} s")
        time.sleep(0.05)


@dataclass
class ConfirmLog:
    """Records, per envelope, when ``publish_many`` reported it confirmed and routed."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    confirmed: dict[str, float] = field(default_factory=dict)  # idempotency key -> monotonic
    published: list[Envelope] = field(default_factory=list)


class RecordingPublisher:
    """Wraps a real publisher; notes the time each confirm came back (for ordering proofs)."""

    def __init__(self, inner: Any, log: ConfirmLog) -> None:
        self._inner = inner
        self._log = log

    def publish(self, envelope: Envelope) -> None:
        self.publish_many([envelope])

    def publish_many(self, envelopes: Sequence[Envelope]) -> list[BusError | None]:
        outcomes: list[BusError | None] = self._inner.publish_many(envelopes)
        now = time.monotonic()
        with self._log.lock:
            for envelope, outcome in zip(envelopes, outcomes, strict=True):
                if outcome is None:
                    self._log.confirmed.setdefault(envelope.idempotency_key, now)
                    self._log.published.append(envelope)
        return outcomes

    def send(self, messages: Sequence[Any]) -> list[BusError | None]:
        """Relay and retry publishes pass straight through (not recorded)."""
        outcomes: list[BusError | None] = self._inner.send(messages)
        return outcomes

    def retry_later(self, route: str, envelopes: Sequence[Envelope],
                    delay_ms: int) -> list[BusError | None]:
        outcomes: list[BusError | None] = self._inner.retry_later(route, envelopes, delay_ms)
        return outcomes

    def close(self) -> None:
        self._inner.close()


def record_confirms(bus: Bus) -> ConfirmLog:
    """Make every publisher the bus hands out a RecordingPublisher (the broker stays real)."""
    log = ConfirmLog()
    original: Callable[[], Any] = bus.publisher
    bus.publisher = lambda: RecordingPublisher(original(), log)  # type: ignore[method-assign]
    return log


def p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
