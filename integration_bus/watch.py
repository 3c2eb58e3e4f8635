"""What ``/ready`` and the gauges on ``/metrics`` read (``docs/monitoring.md`` has the list).

- :class:`Readiness`: the broker and the store answer, and every part this process runs (route
  workers, sources) is running. Parts register a probe that says what is wrong, or None.
- :class:`WatchCollector`: a Prometheus collector that reads queue depths (the broker), messages
  in retry and dead letters (the store) and the age of the oldest unsettled message
  (:class:`~integration_bus.metrics.Flow`) when scraped — a few grouped queries per scrape, at
  most once per ``min_interval``, never anything per message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from integration_bus.errors import BusError
from integration_bus.metrics import Flow
from integration_bus.store import Store
from integration_bus.topology import DEAD_LETTER_QUEUE, Topology
from integration_bus.transport import Transport

__all__ = ["Readiness", "WatchCollector"]

log = structlog.get_logger("integration_bus.watch")

Probe = Callable[[], str | None]  # what is wrong, or None when the part is ready


def _problem(check: Callable[[], Any]) -> str | None:
    try:
        check()
    except BusError as exc:
        return exc.message
    return None


class Readiness:
    """Ready when the broker and the store answer and every registered part says so."""

    def __init__(self, store: Callable[[], Store], transport: Transport,
                 topology: Topology) -> None:
        self._store, self._transport, self._topology = store, transport, topology
        self._parts: dict[str, Probe] = {}
        self._lock = threading.Lock()

    def watch(self, name: str, probe: Probe) -> None:
        """Add (or replace) a part: ``probe()`` says what is wrong with it, or None."""
        with self._lock:
            self._parts[name] = probe

    def _broker(self) -> None:
        if self._transport.embedded:
            return  # in this process: up while the process is
        queue = self._topology.routes[0].queue if self._topology.routes else DEAD_LETTER_QUEUE
        self._transport.queue_stats(queue)  # a passive declare: BrokerUnavailable if down

    def check(self) -> tuple[bool, dict[str, str]]:
        """(ready, {part: "ok" or what is wrong}) — broker, store, then each part."""
        checks = {"broker": _problem(self._broker),
                  "store": _problem(lambda: self._store().ping())}
        with self._lock:
            parts = dict(self._parts)
        for name, probe in sorted(parts.items()):
            checks[name] = probe()
        return (all(v is None for v in checks.values()),
                {name: problem or "ok" for name, problem in checks.items()})


class WatchCollector:
    """The gauges of ``docs/monitoring.md``, read when scraped (at most once per
    ``min_interval`` seconds; a scrape in between gets the last reading). A part that cannot
    be read (broker or store down) leaves its gauges out of that scrape and is logged."""

    def __init__(self, store: Callable[[], Store], transport: Transport, topology: Topology,
                 flow: Flow, *, min_interval: float = 1.0) -> None:
        self._store, self._transport, self._topology = store, transport, topology
        self._flow = flow
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._read_at = -min_interval
        self._last: list[Metric] = []
        self._backlog_since: dict[str, float] = {}  # route -> when first seen non-empty

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not read the broker or the store

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._min_interval:
                self._last = self._read()
                self._read_at = time.monotonic()
            return list(self._last)

    def _read(self) -> list[Metric]:
        routes = [b.route for b in self._topology.routes]
        depths = self._depths()
        families: list[Metric] = []
        if depths is not None:
            depth = GaugeMetricFamily("bus_queue_depth", "Ready messages in the route's queue",
                                      labels=["route"])
            for route in routes:
                depth.add_metric([route], depths.get(route, 0))
            families.append(depth)
        oldest = GaugeMetricFamily(
            "bus_oldest_unsettled_seconds",
            "Age of the oldest message of the route this process holds unsettled, else an "
            "estimate of the oldest ready one (docs/monitoring.md)", labels=["route"])
        for route in routes:
            oldest.add_metric([route], self._oldest(route, None if depths is None
                                                    else depths.get(route, 0)))
        families.append(oldest)
        families += self._from_store(routes)
        return families

    def _depths(self) -> dict[str, int] | None:
        bindings = self._topology.routes
        try:
            stats = self._transport.queue_depths([b.queue for b in bindings])
        except BusError as exc:
            log.warning("watch.broker_unreadable", error=exc.message)
            return None
        return {b.route: (found.messages if (found := stats.get(b.queue)) else 0)
                for b in bindings}

    def _oldest(self, route: str, depth: int | None) -> float:
        held = self._flow.oldest_held(route)
        if not depth:
            if depth == 0:
                self._backlog_since.pop(route, None)
            return held or 0.0
        since = self._backlog_since.setdefault(route, time.monotonic())
        waiting = time.monotonic() - since
        last = self._flow.last_taken(route)
        estimate = waiting if last is None else min(last, waiting)
        return max(held or 0.0, estimate)

    def _from_store(self, routes: Sequence[str]) -> list[Metric]:
        try:
            store = self._store()
            retrying = store.waiting_retry()
            groups = store.dead_letter_groups()
        except BusError as exc:
            log.warning("watch.store_unreadable", error=exc.message)
            return []
        in_retry = GaugeMetricFamily("bus_in_retry", "Messages waiting in a retry tier",
                                     labels=["route"])
        for route in routes:
            in_retry.add_metric([route], retrying.get(route, 0))
        dead = GaugeMetricFamily("bus_dead_letters", "Dead letters waiting (status new), by "
                                 "route and failure group", labels=["route", "group"])
        for route, group, count in groups:
            dead.add_metric([route, group], count)
        return [in_retry, dead]
