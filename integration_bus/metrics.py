"""Prometheus metrics, one registry per Bus (no process-global collectors)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from integration_bus.redact import known

__all__ = ["Metrics", "RedactingRegistry"]

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


class Metrics:
    """Counters and histograms per route and sink.

    - ``bus_route_messages_total{route, outcome}``: received, delivered, retried,
      dead_lettered, filtered
    - ``bus_sink_deliveries_total{route, sink, outcome}``: delivered, duplicate, failed
    - ``bus_sink_delivery_seconds{route, sink}``: time spent in a sink per envelope
    - ``bus_source_published_total{source}``, ``bus_worker_paused`` (1 while the store is down)

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
        self.source_published = Counter("bus_source_published", "Envelopes a source published",
                                        ["source"], registry=self.registry)
        self.worker_paused = Gauge("bus_worker_paused", "1 while the worker waits for the store",
                                   registry=self.registry)
