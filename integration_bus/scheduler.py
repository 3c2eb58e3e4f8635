"""Scheduled jobs on celery (beat + a worker): polling sources, retention purges and stock
reconciliation. celery is not the message router: it only runs these jobs.

The celery app is built per configuration (never at import): its broker is the bus's RabbitMQ
(its own ``bus.jobs`` exchange and queue), or kombu's in-process memory transport in embedded
mode, where beat and the worker share the ``bus scheduler`` process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from celery import Celery
from kombu import Exchange, Queue

from integration_bus.deadletters.console import DeadLetterConsole
from integration_bus.liveness import process_identity
from integration_bus.operators import Operator
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.settings import Config, load_config

__all__ = ["HISTORY_TASK", "POLL_TASK", "PURGE_TASK", "RECONCILE_TASK", "Scheduler",
           "make_scheduler"]

PURGE_TASK = "integration_bus.purge_dead_letters"
POLL_TASK = "integration_bus.poll_source"
HISTORY_TASK = "integration_bus.purge_history"
RECONCILE_TASK = "integration_bus.reconcile"
JOBS = "bus.jobs"

log = structlog.get_logger("integration_bus.scheduler")


@dataclass(frozen=True)
class Scheduler:
    """The celery app with its jobs, and the Bus they run against (opened on first use)."""

    app: Celery
    bus: Callable[[], Bus]


def make_scheduler(config_dir: Path, *, environ: Mapping[str, str] | None = None,
                   registry: Registry | None = None, migrate: bool = False) -> Scheduler:
    """``migrate``: bring the store to the newest revision (always in embedded mode); else it
    must be there already."""
    registry = registry or Registry.from_entry_points()
    config = load_config(config_dir, registry, environ)
    migrate = migrate or config.settings.broker.url is None
    buses: dict[str, Bus] = {}  # one Bus per worker process, opened on first use

    def bus() -> Bus:
        if "bus" not in buses:
            buses["bus"] = Bus(config, registry=registry, migrate=migrate).open()
        return buses["bus"]

    app = Celery("integration_bus", broker=config.settings.broker.url or "memory://",
                 set_as_current=False)
    app.conf.update(
        task_queues=[Queue(JOBS, Exchange(JOBS, "direct", durable=True), routing_key=JOBS)],
        task_default_queue=JOBS, task_default_exchange=JOBS, task_default_routing_key=JOBS,
        task_acks_late=True, worker_prefetch_multiplier=1, timezone="UTC",
        worker_hijack_root_logger=False, beat_schedule=_schedule(config, bus()),
        beat_schedule_filename=str(config.root / "var" / "celerybeat-schedule"),
        broker_connection_retry_on_startup=True,
        broker_failover_strategy=config.settings.broker.failover_strategy,  # ';' node lists
    )

    @app.task(name=PURGE_TASK, shared=False)  # type: ignore[untyped-decorator]
    def purge_dead_letters(older_than_ms: int) -> int:
        """Remove replayed and discarded dead letters older than the retention (audited)."""
        return DeadLetterConsole(bus(), Operator.system("scheduler")).purge(
            timedelta(milliseconds=older_than_ms))

    @app.task(name=HISTORY_TASK, shared=False)  # type: ignore[untyped-decorator]
    def purge_history(older_than_ms: int) -> dict[str, int]:
        """Journal, published outbox rows and seen keys past the store's retention."""
        return bus().store.purge_history(timedelta(milliseconds=older_than_ms))

    @app.task(name=POLL_TASK, shared=False)  # type: ignore[untyped-decorator]
    def poll_source(name: str) -> int | None:
        """One poll of a polling source (skipped while another poll of it is in flight)."""
        return bus().poll(name)

    @app.task(name=RECONCILE_TASK, shared=False)  # type: ignore[untyped-decorator]
    def reconcile() -> dict[str, Any]:
        """ERP vs shop vs projection (``bus reconcile``): gauges in the bus's metrics and in
        ``reconcile.metrics_file``; a summary in the log. A system that cannot be read fails
        the job (the file keeps its last figures, whose timestamp then grows old)."""
        from integration_bus.reconcile import ReconcileMetrics, reconcile_bus, write_metrics_file

        current = bus()
        owner = f"{process_identity()}:{threading.get_ident()}"
        every = config.settings.reconcile.every or 3_600_000
        if not current.store.try_lease("reconcile", owner, timedelta(milliseconds=every)):
            log.info("reconcile.skipped", reason="a reconcile is in flight")
            return {"skipped": True}
        try:
            report = reconcile_bus(current)
        finally:
            current.store.release_lease("reconcile", owner)
        if "reconcile" not in reconcile_metrics:
            reconcile_metrics["reconcile"] = ReconcileMetrics(current.metrics.registry)
        reconcile_metrics["reconcile"].observe(report)
        target = config.settings.reconcile.metrics_file
        if target is not None:
            path = Path(target) if Path(target).is_absolute() else config.root / target
            write_metrics_file(path, report)
        log.info("reconcile.done", compared=report.compared, mismatched=report.mismatched,
                 ratio=round(report.ratio, 6))
        return {"compared": report.compared, "mismatched": report.mismatched,
                "mismatch_ratio": report.ratio}

    reconcile_metrics: dict[str, Any] = {}
    return Scheduler(app=app, bus=bus)


def _schedule(config: Config, bus: Bus) -> dict[str, Any]:
    settings = config.settings.dead_letters
    schedule: dict[str, Any] = {}
    if config.settings.store.journal_retention is not None:
        schedule["purge-history"] = {
            "task": HISTORY_TASK, "schedule": timedelta(hours=1),
            "args": (config.settings.store.journal_retention,)}
    for name, source in bus.polling_sources().items():
        schedule[f"poll-{name}"] = {"task": POLL_TASK, "args": (name,),
                                    "schedule": timedelta(milliseconds=source.interval_ms)}
        source.close()
    if config.settings.reconcile.every is not None:
        every = timedelta(milliseconds=config.settings.reconcile.every)
        schedule["reconcile"] = {"task": RECONCILE_TASK, "args": (), "schedule": every,
                                 # runs queued while no worker was up are not piled up
                                 "options": {"expires": every.total_seconds()}}
    if settings.retention is not None:
        schedule["purge-dead-letters"] = {
            "task": PURGE_TASK, "schedule": timedelta(milliseconds=settings.purge_every),
            "args": (settings.retention,)}
    return schedule
