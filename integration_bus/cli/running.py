"""``bus run``, ``bus worker`` and ``bus demo``."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from integration_bus.cli.options import config_dir_option, handle_errors
from integration_bus.cli.summary import print_summary
from integration_bus.heap import freeze_startup
from integration_bus.relay import OutboxRelay
from integration_bus.runtime import Bus
from integration_bus.threads import join_all, stop_on_signals

F = TypeVar("F", bound=Callable[..., Any])


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def migrate_option(func: F) -> F:
    return click.option(
        "--migrate", is_flag=True,
        help="bring the store's schema to the newest revision first (automatic in embedded "
             "mode; with RabbitMQ, `bus db upgrade` is the usual way)")(func)


def metrics_options(func: F) -> F:
    """``--metrics-host`` and ``--metrics-port`` (over ``metrics:`` in bus.yaml)."""
    func = click.option(
        "--metrics-port", type=click.IntRange(0, 65535), envvar="BUS_METRICS_PORT",
        show_envvar=True,
        help="serve /metrics, /health and /ready on this port (0: any free port; default: "
             "metrics.port in bus.yaml, else not served)")(func)
    return click.option(
        "--metrics-host", envvar="BUS_METRICS_HOST", show_envvar=True,
        help="address to serve them on (default: metrics.host in bus.yaml, else 127.0.0.1; "
             "0.0.0.0 for every interface)")(func)


def _serve_watch(bus: Bus, host: str | None, port: int | None,
                 stop: threading.Event) -> None:
    """Serve /metrics (with the gauges of docs/monitoring.md), /health and /ready, if a port
    is given here or in bus.yaml."""
    settings = bus.config.settings.metrics
    port = port if port is not None else settings.port
    if port is None:
        return
    from integration_bus.watch import WatchCollector
    from integration_bus.web.metrics import serve_metrics

    host = host or settings.host
    bus.metrics.registry.register(WatchCollector(lambda: bus.store, bus.transport, bus.topology,
                                                 bus.metrics.flow))
    bound = serve_metrics(bus.metrics.registry, port, stop, addr=host, limits=settings.http,
                          readiness=bus.readiness)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving http://{shown}:{bound}/metrics, /health and /ready", err=True)


def _open_bus(config_dir: Path, migrate: bool) -> Bus:
    """The bus of ``config_dir``; its store is migrated in embedded mode or when asked, and
    otherwise must be at the newest revision already (exit 2 naming `bus db upgrade`)."""
    bus = Bus.from_config_dir(config_dir, migrate=False)
    bus.migrate = migrate or bus.transport.embedded
    return bus


@click.command("run")
@config_dir_option
@click.option("--routes", help="comma-separated routes to work (default: all)")
@click.option("--sources", help="comma-separated sources to run (default: all)")
@click.option("--no-sources", is_flag=True, help="run no sources (workers and relay only)")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(0, 64),
              help="worker threads (0: sources and relay only, as `bus serve`)")
@metrics_options
@migrate_option
@handle_errors
def run_command(config_dir: Path, routes: str | None, sources: str | None, no_sources: bool,
                workers: int, metrics_host: str | None, metrics_port: int | None,
                migrate: bool) -> None:
    """Run all sources and routes of a config in one process until Ctrl-C / SIGTERM."""
    from integration_bus.web.app import availability_service

    with stop_on_signals() as stop, _open_bus(config_dir, migrate) as bus:
        bus.readiness.watch("run", lambda: None if bus.started.is_set() else "starting")
        _serve_watch(bus, metrics_host, metrics_port, stop)
        mode = "embedded" if bus.transport.embedded else "rabbitmq"
        click.echo(f"bus running ({mode}); Ctrl-C stops after in-flight messages", err=True)
        chosen_sources = [] if no_sources else _split(sources)
        freeze_startup()
        runner = threading.Thread(target=bus.run, args=(stop,), daemon=True,
                                  kwargs={"routes": _split(routes), "sources": chosen_sources,
                                          "workers": workers,
                                          "services": availability_service(bus)})
        runner.start()
        join_all([runner])


@click.command("worker")
@config_dir_option
@click.option("--routes", help="comma-separated routes to work (default: all)")
@metrics_options
@migrate_option
@click.option("--supervise", is_flag=True,
              help="run the worker as a child process and restart it whenever a signal kills "
                   "it (SIGKILL, segfault, OOM); a message that keeps killing it is then "
                   "dead-lettered as crashed_worker (docs/reliability.md)")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              envvar="BUS_WORKER_PROCESSES", show_envvar=True,
              help="run N worker processes side by side, supervised (implies --supervise): "
                   "one per core uses them all; with --metrics-port P, process i serves on "
                   "P+i")
@handle_errors
def worker_command(config_dir: Path, routes: str | None, metrics_host: str | None,
                   metrics_port: int | None, migrate: bool, supervise: bool,
                   processes: int) -> None:
    """Consume route queues (and archive broker dead letters) until SIGTERM.

    Each route (or route group) is its own bulkhead: own consumer, batch loop and sink
    deadlines, so a hung or failing sink holds only its route."""
    if supervise or processes > 1:
        raise SystemExit(_supervised_workers(config_dir, routes, metrics_host, metrics_port,
                                             migrate, processes))
    if metrics_port is not None and metrics_port > 0:
        metrics_port += int(os.environ.get("BUS_PROCESS_INDEX", "0") or 0)
    # Signals first: a SIGTERM while the bus opens (broker, store migrations) stops it cleanly.
    with stop_on_signals() as stop, _open_bus(config_dir, migrate) as bus:
        worker = bus.worker(_split(routes))
        bus.watch_worker("worker", worker)
        _serve_watch(bus, metrics_host, metrics_port, stop)
        freeze_startup()
        worker.run(stop)


def _supervised_workers(config_dir: Path, routes: str | None, metrics_host: str | None,
                        metrics_port: int | None, migrate: bool, processes: int) -> int:
    """``bus worker`` children under the supervisor; each child adds its ``BUS_PROCESS_INDEX``
    to the metrics port, so N processes serve /metrics on N ports."""
    from integration_bus.supervisor import supervise

    bus = _open_bus(config_dir, migrate)
    if bus.migrate:  # once, before the children start, rather than N racing migrations
        bus.open().close()
    command = [sys.executable, "-m", "integration_bus", "worker", "--config-dir", str(config_dir)]
    if routes:
        command += ["--routes", routes]
    if metrics_host is not None:
        command += ["--metrics-host", metrics_host]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    return supervise(command, processes=processes)


@click.command("demo")
@config_dir_option
@click.option("--duration", type=float,
              help="keep producing traffic for N seconds (default: play the scenario once)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option("--keep", is_flag=True, help="keep the previous demo state under var/demo")
@handle_errors
def demo_command(config_dir: Path, duration: float | None, as_json: bool, keep: bool) -> None:
    """The retail scenario with a fake ERP, a fake shop and POS lanes, on the embedded defaults.

    Plays the scenario (POS files, web orders, short-stock orders, returns; with --duration,
    more for N seconds), waits until everything has settled, stops and prints a summary whose
    counts add up. Ctrl-C stops early. Exit 1 when a check of the summary fails.
    """
    from integration_bus.cli.demo import run_demo

    with stop_on_signals() as stop:
        summary = run_demo(config_dir, duration=duration, as_json=as_json, keep=keep, stop=stop)
    print_summary(summary, as_json=as_json)
    if not summary["nothing_lost"] and not stop.is_set():
        raise SystemExit(1)


@click.command("scheduler")
@config_dir_option
@migrate_option
@handle_errors
def scheduler_command(config_dir: Path, migrate: bool) -> None:
    """Run the scheduled jobs (celery beat + worker): retention purge of dead letters."""
    from integration_bus.scheduler import make_scheduler

    def stop_before_celery(signum: int, _frame: object) -> None:
        # celery installs its own (graceful) handlers when its worker starts; a SIGTERM before
        # that (`docker stop` right after start) ends here, still closing the bus: exit 0
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stop_before_celery)
    try:
        scheduler = make_scheduler(config_dir, migrate=migrate)
        app = scheduler.app
        (Path(config_dir).resolve().parent / "var").mkdir(exist_ok=True)
        click.echo(f"scheduler running: "
                   f"{', '.join(app.conf.beat_schedule) or 'no jobs configured'}", err=True)
        bus = scheduler.bus()
        stop = threading.Event()
        if not bus.transport.embedded:  # embedded: the running `bus run` relays the outbox
            relay = OutboxRelay(bus.store, bus.publisher)
            threading.Thread(target=relay.run, args=(stop,), name="relay", daemon=True).start()
        try:
            app.Worker(beat=True, pool="solo", concurrency=1, loglevel="WARNING",
                       quiet=True).start()
        finally:
            stop.set()
            bus.close()
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("serve")
@config_dir_option
@click.option("--sources", help="comma-separated sources to run (default: all)")
@metrics_options
@migrate_option
@click.pass_context
def serve_command(ctx: click.Context, config_dir: Path, sources: str | None,
                  metrics_host: str | None, metrics_port: int | None, migrate: bool) -> None:
    """Run the sources only (webhook receivers, watched folders, polls) — no route workers."""
    ctx.invoke(run_command, config_dir=config_dir, routes=None, sources=sources,
               no_sources=False, workers=0, metrics_host=metrics_host,
               metrics_port=metrics_port, migrate=migrate)


class SimulatorGroup(click.Group):
    """``bus sim NAME``: the simulators installed packages register (entry-point group
    ``integration_bus.simulators``: a fake ERP, a fake shop...)."""

    def _simulators(self) -> dict[str, click.Command]:
        from integration_bus.simulator import Simulators

        return Simulators.from_entry_points().commands()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._simulators())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._simulators().get(cmd_name)


@click.group("sim", cls=SimulatorGroup)
def sim_group() -> None:
    """Simulators of the systems the bus connects (for tests and the demo)."""
