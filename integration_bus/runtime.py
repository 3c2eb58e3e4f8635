"""The Bus: owns configuration, registry, transport, store and metrics, and runs them.

Nothing here is global: a test builds its own Bus. Lifecycle: ``Bus.from_config_dir(...)`` →
``open()`` (store migrated, topology declared) → ``worker()`` / ``run(stop)`` → ``close()``.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from integration_bus.connector import ConnectorContext, PollingSource, Sink, Source
from integration_bus.envelope import Envelope, new_id
from integration_bus.errors import BusError, ConfigError
from integration_bus.isolation import IsolationGate
from integration_bus.liveness import process_identity
from integration_bus.metrics import Metrics
from integration_bus.pii import PersonalData
from integration_bus.pipeline import IdentityPipeline, Pipeline
from integration_bus.redact import Redaction
from integration_bus.registry import Registry
from integration_bus.relay import OutboxRelay
from integration_bus.reload import MappingReloader, ReloadablePipeline
from integration_bus.retail.orders.book import SagaBook
from integration_bus.retail.projection import AvailabilityPolicy, StockProjection
from integration_bus.route import Route
from integration_bus.settings import Config, load_config
from integration_bus.settings.models import BrokerSettings
from integration_bus.source_batch import BatchSource, run_batch_source
from integration_bus.store import (
    DeadLetter,
    JournalEntry,
    OutboxItem,
    SeenKeys,
    Settlement,
    SourceCursors,
    Store,
    utcnow,
)
from integration_bus.store.queue import MessageQueue
from integration_bus.threads import join_all
from integration_bus.topology import INGRESS_EXCHANGE, RouteBinding, Topology
from integration_bus.tracing import Tracing
from integration_bus.transport import EmbeddedTransport, Transport, TransportPublisher
from integration_bus.transport.traced import TracedPublisher
from integration_bus.watch import Readiness
from integration_bus.worker import RESTART_BACKOFF, Worker, WorkerOptions

__all__ = ["Bus"]

log = structlog.get_logger("integration_bus")


class Bus:
    """One configured bus. ``close()`` is idempotent."""

    def __init__(self, config: Config, *, registry: Registry,
                 pipelines: Mapping[str, Pipeline] | None = None,
                 migrate: bool = True, tracing: Tracing | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``migrate``: bring the store's schema to head when it is first used; False: require
        it at head already (read-only commands; ConfigError naming ``bus db upgrade``).
        ``tracing``: default from the process's ``OTEL_*`` variables (off unless
        ``OTEL_TRACES_EXPORTER`` names an exporter; see ``integration_bus.tracing``).
        ``clock``: what plugins are told the time is (epoch seconds; tests move it).
        ``registry``: the plugins this bus builds its sources and sinks with; plugins registered
        by factory are built anew for this bus (``Registry.fresh``), so two buses in one
        process share no breaker, pacer or cache."""
        self.config = config
        self.tracing = tracing if tracing is not None else Tracing.from_environ(os.environ)
        self.clock = clock
        self.migrate = migrate
        self.registry = registry.fresh()
        self.metrics = Metrics()
        dead_letters = config.settings.dead_letters
        #: what this bus hides from logs, the journal, dead letters and everything shown
        self.redaction = Redaction(PersonalData(dead_letters.redact,
                                                builtin=dead_letters.redact_builtin))
        self.topology = _topology(config)
        self.transport: Transport = open_transport(config.settings.broker,
                                                   lambda: self.store.queue)
        self._pipelines = dict(pipelines) if pipelines is not None else None
        self._store: Store | None = None
        self._closed = False
        #: what ``/ready`` reports: broker, store, and the parts :meth:`run` starts
        self.readiness = Readiness(lambda: self.store, self.transport, self.topology)
        self._threads: dict[str, str | None] = {}  # thread name -> what is wrong, or None
        #: set by :meth:`run` once every part it runs has been started
        self.started = threading.Event()
        #: one per process: a crash suspect runs alone among all lanes of all workers
        self.gate = IsolationGate()

    @classmethod
    def from_config_dir(cls, config_dir: Path, *, environ: Mapping[str, str] | None = None,
                        registry: Registry | None = None, migrate: bool = True,
                        clock: Callable[[], float] = time.time) -> Bus:
        registry = registry or Registry.from_entry_points()
        return cls(load_config(config_dir, registry, environ), registry=registry,
                   migrate=migrate, clock=clock)

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            settings = self.config.settings.store
            self._store = Store.open(settings.url, root=self.config.root,
                                     pool_size=settings.pool_size, migrate=self.migrate,
                                     redaction=self.redaction)
        return self._store

    @property
    def stock(self) -> StockProjection:
        """The stock projection, with the configured availability policy."""
        settings = self.config.settings.availability
        return StockProjection(self.store, AvailabilityPolicy(
            safety_stock=settings.safety_stock, per_location=settings.per_location,
            include_in_transit=settings.include_in_transit))

    def open(self) -> Bus:
        """Open the store (migrated unless ``migrate`` is False) and declare the topology
        (both idempotent)."""
        self.pipelines()
        _ = self.store
        self.transport.declare(self.topology)
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.transport.close()
        if self._store is not None:
            self._store.close()
        self.tracing.shutdown()

    def __enter__(self) -> Bus:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building blocks -------------------------------------------------------------------------
    def pipelines(self) -> dict[str, Pipeline]:
        """Compiled mappings by name (loaded once, only if a route names one)."""
        if self._pipelines is None:
            wanted = {r.pipeline for r in self.config.settings.routes.values() if r.pipeline}
            self._pipelines = {}
            if wanted:
                self._pipelines = {name: ReloadablePipeline(mapping)
                                   for name, mapping in self._load_mappings().items()}
            for route_name, route in self.config.settings.routes.items():
                if route.pipeline and route.pipeline not in self._pipelines:
                    raise ConfigError(f"route {route_name!r} names pipeline "
                                      f"{route.pipeline!r}, which is not in "
                                      f"{self.config.mappings_dir}", file=str(self.config.file),
                                      field=f"routes.{route_name}.pipeline")
        return self._pipelines

    def _load_mappings(self) -> Mapping[str, Pipeline]:
        from integration_bus.mapping import load_mappings

        return load_mappings(self.config.mappings_dir, self.config.schemas_dir)

    def reloader(self) -> MappingReloader | None:
        """A reloader for the mappings routes use (None when no route names one)."""
        proxies = {n: p for n, p in self.pipelines().items() if isinstance(p, ReloadablePipeline)}
        if not proxies:
            return None
        return MappingReloader(proxies, [self.config.mappings_dir, self.config.schemas_dir],
                               self._load_mappings)

    def context(self, instance: str) -> ConnectorContext:
        return ConnectorContext(
            instance=instance, root=self.config.root,
            cursors=SourceCursors(self.store, instance),
            seen=SeenKeys(self.store, instance),
            stock=self.stock,
            open_publisher=self.publisher,
            log=log.bind(connector=instance),
            reject=lambda raw, error, ref: self.reject(instance, raw, error, ref),
            record=lambda event, detail: self.record(instance, event, detail),
            stage=lambda envelopes, cursor: self.stage(instance, envelopes, cursor),
            metrics=self.metrics,
            span=lambda name, attributes: self.tracing.span(name, attributes),
            compile_mapping=self._compile_mapping,
            sinks=self.sink, sagas=SagaBook(self.store), store=self.store, clock=self.clock)

    def _compile_mapping(self, path: Path) -> Pipeline:
        """One mapping file for a plugin (``ConnectorContext.load_mapping``)."""
        from integration_bus.mapping import load_mapping

        return load_mapping(path, xref_dir=self.config.mappings_dir / "xref",
                            schemas_dir=self.config.schemas_dir)

    def publisher(self) -> TransportPublisher:
        """A new publisher (own connection; use it from one thread); it traces what it
        publishes when tracing is on."""
        publisher = self.transport.publisher()
        if self.tracing.enabled:
            return TracedPublisher(publisher, self.tracing)
        return publisher

    def sink(self, name: str) -> Sink:
        instance = self.config.sinks[name]
        plugin = self.registry.get(instance.connector)
        assert plugin.create_sink is not None
        return plugin.create_sink(instance.config, self.context(name))

    def source(self, name: str) -> Source | PollingSource:
        instance = self.config.sources[name]
        plugin = self.registry.get(instance.connector)
        assert plugin.create_source is not None
        return plugin.create_source(instance.config, self.context(name))

    def routes(self, names: Sequence[str] | None = None) -> list[Route]:
        """Routes with fresh sink instances (one set per worker: sinks are thread-confined)."""
        settings = self.config.settings.routes
        chosen = list(settings) if not names else list(names)
        unknown = [n for n in chosen if n not in settings]
        if unknown:
            raise ConfigError(f"no route named {unknown[0]!r}",
                              hint=f"routes are: {', '.join(settings)}")
        pipelines = self.pipelines()
        # One sink instance per (bulkhead, sink): sinks are thread-confined, and a sink
        # shared by routes of two groups must not let one group's hung call hold the other.
        sinks: dict[tuple[str, str], Sink] = {}
        out = []
        for name in chosen:
            route = settings[name]
            lane = route.group or name
            for sink_name in route.to:
                if (lane, sink_name) not in sinks:
                    sinks[lane, sink_name] = self.sink(sink_name)
            out.append(Route(name=name,
                             pipeline=pipelines[route.pipeline] if route.pipeline
                             else IdentityPipeline(),
                             sinks=tuple(sinks[lane, s] for s in route.to), retry=route.retry,
                             group=route.group or "", deadline=route.deadline / 1000,
                             crash_limit=route.effective_crash_limit))
        return out

    def worker(self, routes: Sequence[str] | None = None, *,
               options: WorkerOptions | None = None, **kwargs: Any) -> Worker:
        broker = self.config.settings.broker
        options = options or WorkerOptions(
            batch_size=broker.batch_size, prefetch=broker.prefetch,
            settle_behind=self.config.settings.store.settle_behind)
        kwargs.setdefault("gate", self.gate)
        return Worker(self.transport, self.store, self.routes(routes), self.topology,
                      metrics=self.metrics, options=options, tracing=self.tracing, **kwargs)

    def reject(self, instance: str, raw: bytes | str, error: BusError,
               source_ref: dict[str, Any]) -> None:
        """Input a source could not publish goes to the dead-letter store, never nowhere."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        now = utcnow()
        envelope_id = new_id()
        letter = DeadLetter(
            id=new_id(), envelope={"id": envelope_id, "source": instance, "raw": text},
            route=None, reason="rejected", error_type=error.error_type, message=str(error),
            failed_at=now, step=f"source:{instance}", source_ref=source_ref,
            traceback="".join(traceback.format_exception(error)))
        self.metrics.source_rejections.labels(instance, "dead_lettered").inc()
        self.store.settle(Settlement(journal=[JournalEntry(envelope_id, "rejected", now,
                                                           detail={"source": instance,
                                                                   **source_ref,
                                                                   "connector": instance,
                                                                   "rejection": "dead_lettered"})],
                                     dead=[letter]))
        log.warning("source.rejected", source=instance, error=str(error), **source_ref)

    def record(self, instance: str, event: str, detail: dict[str, Any]) -> None:
        """A journal event about a connector (not about one envelope)."""
        self.store.settle(Settlement(journal=[JournalEntry(
            new_id(), event, utcnow(), detail={"connector": instance, **detail})]))
        log.info("connector.event", connector=instance, journal_event=event, **detail)

    def stage(self, instance: str, envelopes: Sequence[Envelope],
              cursor: tuple[str, str] | None) -> None:
        """Envelopes to the outbox and a source's cursor, atomically (see PollingSource)."""
        if self.tracing.enabled:  # staged in a poll's span: they belong to its trace
            envelopes = [e if "traceparent" in e.headers else self.tracing.stamp(e)
                         for e in envelopes]
        self.store.stage([OutboxItem(INGRESS_EXCHANGE, e.type, e) for e in envelopes],
                         reason=f"source:{instance}",
                         cursor=(f"{instance}:{cursor[0]}", cursor[1]) if cursor else None)

    def poll(self, name: str, source: PollingSource | None = None, *,
             lease: timedelta = timedelta(minutes=2)) -> int | None:
        """One poll of a polling source, unless another poll of it is in flight (None then)."""
        owner = f"{process_identity()}:{threading.get_ident()}"
        if not self.store.try_lease(f"poll:{name}", owner, lease):
            log.info("source.poll_skipped", source=name, reason="a poll is in flight")
            return None
        own = source is None
        polling = source or self.source(name)
        try:
            if not isinstance(polling, PollingSource):
                raise ConfigError(f"source {name!r} is not a polling source")
            with self.tracing.span("source.poll", {"bus.source": name}):
                return polling.poll()
        finally:
            self.store.release_lease(f"poll:{name}", owner)
            if own:
                polling.close()

    def polling_sources(self) -> dict[str, PollingSource]:
        found: dict[str, PollingSource] = {}
        for name in self.config.sources:
            source = self.source(name)
            if isinstance(source, Source):
                source.close()
            else:
                found[name] = source
        return found

    def _run_polls(self, name: str, source: PollingSource, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.poll(name, source)
                except BusError as exc:  # the system is down: try again next round
                    log.warning("source.poll_failed", source=name, error=str(exc))
                stop.wait(source.interval_ms / 1000)
        finally:
            source.close()

    # -- running ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, routes: Sequence[str] | None = None,
            sources: Sequence[str] | None = None, workers: int = 1,
            on_worker: Callable[[Worker], None] | None = None,
            services: Mapping[str, Callable[[threading.Event], None]] | None = None) -> None:
        """Run sources, workers and the outbox relay in threads until ``stop`` is set.

        ``services``: more parts to run beside them, by name, each until ``stop`` is set and
        restarted like the others if it crashes. A face hands in what it serves on top of the
        bus (``bus run`` adds the availability API of :mod:`integration_bus.web.app`); the
        runtime never imports a face."""
        threads = []
        for name in (self.config.sources if sources is None else sources):
            prebuilt = [self.source(name)]  # built now: a bad config fails at start-up
            threads.append(self._thread(f"source:{name}",
                                        functools.partial(self._run_named_source, name, stop,
                                                          prebuilt), stop))
            self.readiness.watch(f"source:{name}", functools.partial(self._thread_problem,
                                                                     f"source:{name}"))
        for index in range(workers):
            worker = self.worker(routes)
            if on_worker is not None:
                on_worker(worker)
            threads.append(self._thread(f"worker:{index}", functools.partial(worker.run, stop),
                                        stop))
            self.watch_worker(f"worker:{index}", worker)
        relay = OutboxRelay(self.store, self.publisher)
        threads.append(self._thread("relay", functools.partial(relay.run, stop), stop))
        for name, service in (services or {}).items():
            threads.append(self._thread(name, functools.partial(service, stop), stop))
        reloader = self.reloader()
        if reloader is not None:
            threads.append(self._thread("reload", functools.partial(reloader.run, stop), stop))
        for thread in threads:
            thread.start()
        self.started.set()
        join_all(threads)  # in slices: the calling (main) thread still runs signal handlers

    def _run_named_source(self, name: str, stop: threading.Event,
                          prebuilt: list[Source | PollingSource]) -> None:
        # A restart after a crash builds a new source: the crashed one was closed on the way out.
        source = prebuilt.pop() if prebuilt else self.source(name)
        if isinstance(source, Source):
            self._run_source(source, stop)
        else:
            self._run_polls(name, source, stop)

    def _run_source(self, source: Source, stop: threading.Event) -> None:
        publisher = self.publisher()
        try:
            if isinstance(source, BatchSource):  # it reads; the runtime publishes, then acks
                run_batch_source(source, publisher, stop)
            else:
                source.run(publisher, stop)
        finally:
            publisher.close()
            source.close()

    def watch_worker(self, name: str, worker: Worker) -> None:
        """Make ``worker`` part of ``/ready``: ready while it consumes and is not paused."""
        def probe() -> str | None:
            problem = self._threads.get(name)
            if problem is not None:
                return problem
            if worker.state.paused:
                return f"paused: {worker.state.last_error or 'the store is unavailable'}"
            if not worker.state.connected:
                return f"not consuming: {worker.state.last_error or 'connecting'}"
            return None
        self.readiness.watch(name, probe)

    def _thread_problem(self, name: str) -> str | None:
        return self._threads.get(name, "not started")

    def _thread(self, name: str, target: Callable[[], None],
                stop: threading.Event) -> threading.Thread:
        """A thread that restarts ``target`` (with backoff) if it crashes, until ``stop``.
        Its state is kept for ``/ready``: not started, running (or done), crashed and waiting
        to restart."""
        threads = self._threads

        def supervised() -> None:
            restarts = RESTART_BACKOFF.start()
            while not stop.is_set():
                threads[name] = None
                try:
                    target()  # returned: done (a file read to its end), not a fault
                    return
                except Exception as exc:  # a bug in a source/worker must not stop the bus
                    threads[name] = f"crashed ({type(exc).__name__}: {exc}); restarting"
                    delay = restarts.failed()
                    log.error("thread.crashed", thread=name, restart_in=delay,
                              error=f"{type(exc).__name__}: {exc}",
                              traceback=traceback.format_exc())
                    stop.wait(delay)
        threads.setdefault(name, "not started")
        return threading.Thread(target=supervised, name=name, daemon=True)


def _topology(config: Config) -> Topology:
    routes = tuple(RouteBinding(route=name, patterns=tuple(r.from_),
                                delivery_limit=r.delivery_limit)
                   for name, r in config.settings.routes.items())
    return Topology(routes=routes, retry_tiers_ms=tuple(config.settings.broker.retry_tiers))


def open_transport(broker: BrokerSettings, queues: Callable[[], MessageQueue]) -> Transport:
    """RabbitMQ when ``broker.url`` is set, else the embedded transport on the store's queue
    table (``queues``: the store's, opened when first used)."""
    if broker.url is None:
        return EmbeddedTransport(queues, max_queued=broker.max_queued,
                                 max_message=broker.max_message)
    # imported here: embedded mode never loads kombu
    from integration_bus.transport.amqp import AmqpTransport

    return AmqpTransport(broker.url, heartbeat=broker.heartbeat,
                         connect_timeout=broker.connect_timeout / 1000,
                         confirm_window=broker.confirm_window, max_message=broker.max_message,
                         failover_strategy=broker.failover_strategy)
