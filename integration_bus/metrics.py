"""Prometheus metrics, one registry per Bus (no process-global collectors)."""

from __future__ import annotations

import re
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from integration_bus.redact import known

__all__ = ["Flow", "Metrics", "RedactingRegistry", "observe_many", "ulid_seconds"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                    5, 10, 30)


class RedactingRegistry(CollectorRegistry):
    """A registry whose label values pass the secrets scrub when scraped: a plugin that labels
    by URL (an endpoint with ``user:password@``) cannot put the password on ``/metrics``."""

    def collect(self) -> Iterable[Metric]:
        secrets = known()
        for metric in super().collect():
            metric.samples = [
                sample._replace(labels={k: secrets.scrub(v) for k, v in sample.labels.items()})
                for sample in metric.samples]
            yield metric


_AGE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600,
                86400)
_ULID_TIME = re.compile(r"[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{10}")
# Crockford's base 32 (either case) as the digits int(..., 32) reads
_TO_BASE32 = str.maketrans("0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyz",
                           "0123456789abcdefghijklmnopqrstuvabcdefghijklmnopqrstuv")


def ulid_seconds(ident: str) -> float | None:
    """The creation time (Unix seconds) a ULID carries in its first 10 characters; None for
    an id that is not a ULID (a correlation id a partner gave). Called per delivered message
    (the flow-age histogram), so it decodes in C: a translate and one ``int``."""
    if len(ident) != 26 or not _ULID_TIME.fullmatch(ident, 0, 10):
        return None
    return int(ident[:10].translate(_TO_BASE32), 32) / 1000


def observe_many(histogram: Any, amounts: Sequence[float]) -> None:
    """``histogram.observe(amount)`` for each of ``amounts``, on a labelled child: the same
    counts, and the same sum but for float rounding. A worker observes two histograms per
    delivered message; ``observe`` takes a lock for the sum and one for the bucket each time,
    this takes one per bucket touched and one for the sum, per sink call (docs/benchmarks.md).
    It reads prometheus_client's ``_upper_bounds``, ``_buckets`` (a bucket per bound, each
    counting the amounts up to it that no lower bound took) and ``_sum``; without them it
    observes one by one. ``tests/test_metrics_observe.py`` holds both ways to the same
    exposition."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    histogram._raise_if_not_observable()
    counts: dict[int, int] = {}
    for amount in amounts:
        if amount == amount:  # NaN counts in no bucket (observe's ``<=`` is never true)
            index = bisect_left(bounds, amount)  # the first bound >= amount: the last is +Inf
            counts[index] = counts.get(index, 0) + 1
    if amounts:
        total.inc(sum(amounts))
    for index, count in counts.items():
        buckets[index].inc(count)


class Flow:
    """Which messages this process holds unsettled, per route: what
    ``bus_oldest_unsettled_seconds`` reads. A worker reports each batch it took
    (:meth:`taken`: per route, the creation time of the oldest envelope in it) and that it is
    done with it (:meth:`settled`, after the ack). Cheap: one dict update per batch, never per
    message. Thread-safe (``bus run --workers N`` shares one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[int, str], float] = {}  # (worker, route) -> oldest created, epoch
        self._last: dict[str, float] = {}  # route -> created time of the last oldest taken

    def taken(self, worker: int, oldest: Mapping[str, datetime]) -> None:
        with self._lock:
            for route, created in oldest.items():
                stamp = created.timestamp()
                self._held[(worker, route)] = stamp
                self._last[route] = stamp

    def settled(self, worker: int) -> None:
        with self._lock:
            for key in [k for k in self._held if k[0] == worker]:
                del self._held[key]

    def oldest_held(self, route: str) -> float | None:
        """Seconds since the oldest envelope of ``route`` held now was created (None: none)."""
        with self._lock:
            stamps = [t for (_, r), t in self._held.items() if r == route]
        return max(0.0, time.time() - min(stamps)) if stamps else None

    def last_taken(self, route: str) -> float | None:
        """Seconds since the envelope last taken first from ``route``'s queue was created."""
        with self._lock:
            stamp = self._last.get(route)
        return max(0.0, time.time() - stamp) if stamp is not None else None


class Metrics:
    """Counters and histograms per route and sink.

    - ``bus_route_messages_total{route, outcome}``: received, delivered, retried,
      dead_lettered, filtered
    - ``bus_sink_deliveries_total{route, sink, outcome}``: delivered, duplicate, failed
    - ``bus_sink_delivery_seconds{route, sink}``: time spent in a sink per envelope
    - ``bus_flow_age_seconds{route, sink}``: at each delivery, seconds since the flow's first
      envelope was created (the time in its ULID correlation id): on the route that creates
      the ERP sales order, a web order's age
    - ``bus_source_published_total{source}``, ``bus_worker_paused`` (1 while the store is down)
    - ``bus_source_rejections_total{source, reason}``: input a source refused (quarantined,
      refused, duplicate files; webhooks answered 4xx): see ``ConnectorContext.rejected``

    The gauges of ``docs/monitoring.md`` (queue depth, in retry, dead letters, oldest
    unsettled) are read at scrape time by :class:`integration_bus.watch.WatchCollector`;
    :attr:`flow` is what this process holds unsettled.

    Served over HTTP by :func:`integration_bus.web.metrics.serve_metrics`.
    """

    def __init__(self) -> None:
        self.registry: CollectorRegistry = RedactingRegistry(auto_describe=True)
        self.route_messages = Counter("bus_route_messages", "Messages handled per route",
                                      ["route", "outcome"], registry=self.registry)
        self.sink_deliveries = Counter("bus_sink_deliveries", "Deliveries per sink",
                                       ["route", "sink", "outcome"], registry=self.registry)
        self.sink_latency = Histogram("bus_sink_delivery_seconds", "Time in a sink per envelope",
                                      ["route", "sink"], buckets=_LATENCY_BUCKETS,
                                      registry=self.registry)
        self.flow_age = Histogram("bus_flow_age_seconds", "Seconds from the flow's first "
                                  "envelope to this delivery", ["route", "sink"],
                                  buckets=_AGE_BUCKETS, registry=self.registry)
        self.source_published = Counter("bus_source_published", "Envelopes a source published",
                                        ["source"], registry=self.registry)
        self.worker_paused = Gauge("bus_worker_paused", "1 while the worker waits for the store",
                                   registry=self.registry)
        self.source_rejections = Counter(
            "bus_source_rejections", "Input refused at a source, by reason",
            ["source", "reason"], registry=self.registry)
        self.flow = Flow()
