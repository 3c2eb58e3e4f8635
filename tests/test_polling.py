"""Polling sources: cursor and envelopes staged together; one poll in flight; beat schedule."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from integration_bus.liveness import process_identity
from integration_bus.runtime import Bus
from integration_bus.scheduler import POLL_TASK, make_scheduler
from integration_bus.settings import load_config
from tests.conftest import write_config
from tests.support.probe import Target, probe_plugin, registry_with, running, wait_for
from tests.support.upstream import Upstream, changes_plugin

CONFIG = """
broker: {{url: "{url}"}}
store: {{url: sqlite:///var/bus.db}}
sources:
  erp_stock: {{connector: changes, interval: 0.05}}
sinks:
  shop: {{connector: probe}}
routes:
  stock: {{from: [stock.changed], to: [shop]}}
"""


def build(tmp_path: Path, url: str, upstream: Upstream, target: Target) -> tuple[Path, Bus]:
    config_dir = write_config(tmp_path, CONFIG.format(url=url))
    registry = registry_with(probe_plugin(target), changes_plugin(upstream))
    return config_dir, Bus(load_config(config_dir, registry, {}), registry=registry).open()


@pytest.mark.parametrize("mode", ["embedded", "rabbitmq"])
def test_polled_changes_arrive_once_even_if_the_bus_dies_after_a_poll(
        tmp_path: Path, mode: str, request: pytest.FixtureRequest) -> None:
    url = "" if mode == "embedded" else request.getfixturevalue("rabbitmq_url")
    upstream, target = Upstream(), Target()
    upstream.add(250)
    # Given a poll that staged its envelopes and moved its cursor, then the process died
    # before anything was published (no relay ran)
    _, first = build(tmp_path, url, upstream, target)
    assert first.poll("erp_stock") == 100
    assert first.store.outbox_waiting() == 100
    first.close()
    # When the bus runs again, polling on its own
    _, bus = build(tmp_path, url, upstream, target)
    with running(lambda stop: bus.run(stop)):
        wait_for(lambda: target.count() == 250, message="first 250 changes")
        upstream.add(30)
        wait_for(lambda: target.count() == 280, message="changes added later")
    bus.close()
    # Then every change arrived exactly once: nothing lost, nothing polled twice
    assert target.duplicates() == {}
    assert sorted(int(e.payload["seq"]) for e in target.envelopes) == list(range(1, 281))


def test_only_one_poll_of_a_source_runs_at_a_time(tmp_path: Path) -> None:
    upstream, target = Upstream(), Target()
    upstream.add(5)
    _, bus = build(tmp_path, "", upstream, target)
    upstream.hold.clear()
    results: list[int | None] = []
    slow = threading.Thread(target=lambda: results.append(bus.poll("erp_stock")))
    slow.start()
    assert upstream.holding.wait(10)
    assert bus.poll("erp_stock") is None  # skipped: the first is still in flight
    upstream.hold.set()
    slow.join(10)
    assert results == [5] and upstream.calls == 1
    assert bus.poll("erp_stock") == 0  # and the lease was given back
    bus.close()


def test_scheduler_plans_a_beat_entry_per_polling_source(tmp_path: Path) -> None:
    upstream, target = Upstream(), Target()
    upstream.add(3)
    config_dir = write_config(tmp_path, CONFIG.format(url=""))
    registry = registry_with(probe_plugin(target), changes_plugin(upstream))
    scheduler = make_scheduler(config_dir, environ={}, registry=registry)
    entry = scheduler.app.conf.beat_schedule["poll-erp_stock"]
    assert entry["task"] == POLL_TASK and entry["args"] == ("erp_stock",)
    assert entry["schedule"].total_seconds() == pytest.approx(0.05)
    assert scheduler.app.tasks[POLL_TASK].apply(args=("erp_stock",)).get() == 3
    assert scheduler.bus().store.outbox_waiting() == 3
    scheduler.bus().close()


def test_a_poll_lease_held_by_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    upstream, target = Upstream(), Target()
    upstream.add(2)
    _, bus = build(tmp_path, "", upstream, target)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    alive = f"{process_identity()}:12345"  # this process (host:pid:start), another thread
    assert bus.store.try_lease("poll:erp_stock", alive, timedelta(minutes=2))
    assert bus.poll("erp_stock") is None  # a live holder keeps its lease
    bus.store.release_lease("poll:erp_stock", alive)
    assert bus.store.try_lease("poll:erp_stock", f"{process_identity().split(':')[0]}:{dead}:1",
                               timedelta(minutes=2))
    assert bus.poll("erp_stock") == 2  # the holder is gone: no need to wait out its lease
    bus.close()


def test_a_source_that_crashes_is_rebuilt_and_keeps_polling(tmp_path: Path) -> None:
    upstream, target = Upstream(), Target()
    upstream.add(3)
    upstream.crash_next = True
    _, bus = build(tmp_path, "", upstream, target)
    with running(lambda stop: bus.run(stop)):
        wait_for(lambda: target.count() == 3, timeout=30, message="polled after the crash")
        upstream.add(2)
        wait_for(lambda: target.count() == 5, message="and keeps polling")
    assert upstream.sources_built >= 2  # the crashed (closed) source was not polled again
    bus.close()
