"""Scheduled jobs on celery (beat + a worker): retention purges now; polling sources and
reconciliation later. celery is not the message router: it only runs these jobs.

The celery app is built per configuration (never at import): its broker is the bus's RabbitMQ
(its own ``bus.jobs`` exchange and queue), or kombu's in-process memory transport in embedded
mode, where beat and the worker share the ``bus scheduler`` process.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from integration_bus.deadletters.console import DeadLetterConsole
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.settings import Config, load_config

__all__ = ["PURGE_TASK", "make_celery"]

PURGE_TASK = "integration_bus.purge_dead_letters"
JOBS = "bus.jobs"


def make_celery(config_dir: Path, *, environ: Mapping[str, str] | None = None) -> Celery:
    config = load_config(config_dir, Registry.from_entry_points(), environ)
    app = Celery("integration_bus", broker=config.settings.broker.url or "memory://",
                 set_as_current=False)
    app.conf.update(
        task_queues=[Queue(JOBS, Exchange(JOBS, "direct", durable=True), routing_key=JOBS)],
        task_default_queue=JOBS, task_default_exchange=JOBS, task_default_routing_key=JOBS,
        task_acks_late=True, worker_prefetch_multiplier=1, timezone="UTC",
        worker_hijack_root_logger=False, beat_schedule=_schedule(config),
        beat_schedule_filename=str(config.root / "var" / "celerybeat-schedule"),
        broker_connection_retry_on_startup=True,
    )

    @app.task(name=PURGE_TASK)  # type: ignore[untyped-decorator]
    def purge_dead_letters(older_than_ms: int) -> int:
        """Remove replayed and discarded dead letters older than the retention (audited)."""
        with Bus.from_config_dir(config_dir, environ=environ) as bus:
            return DeadLetterConsole(bus, actor="scheduler").purge(
                timedelta(milliseconds=older_than_ms))

    return app


def _schedule(config: Config) -> dict[str, Any]:
    settings = config.settings.dead_letters
    schedule: dict[str, Any] = {}
    if settings.retention is not None:
        schedule["purge-dead-letters"] = {
            "task": PURGE_TASK, "schedule": timedelta(milliseconds=settings.purge_every),
            "args": (settings.retention,)}
    return schedule
