"""Polling-only mode (issue: 200 files dropped, all discovered within 2 rescan intervals, none
processed twice) — as on an NFS/SMB share, where inotify sees nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from connectors.pos_file.lane import daily_file_bytes
from tests.pos_file.support import daily_layout, drop, files_in, open_pos_bus, source_yaml
from tests.support.probe import wait_for

pytestmark = pytest.mark.rabbitmq

RESCAN = 1.0  # seconds
BURSTS, PER_BURST, RECORDS = 4, 50, 5


def _at_least(count: Callable[[], float], goal: int) -> bool:
    return count() >= goal


def test_polling_only_discovers_every_file_within_two_rescans_and_takes_each_once(
        tmp_path: Path, rabbitmq_url: str) -> None:
    bus = open_pos_bus(tmp_path, rabbitmq_url, sources=source_yaml(
        extra=f"watch: polling\nrescan_interval: {RESCAN}s\npoll_interval: 100ms"))
    layout = daily_layout()

    def discovered() -> float:
        value = bus.bus.metrics.registry.get_sample_value("pos_file_discovered_total",
                                                          {"source": "tills"})
        return value or 0.0

    try:
        names: list[str] = []
        with bus.running_source(bus.source()):
            for burst in range(BURSTS):
                # Given 50 more files, dropped while the source still works on the last 50
                files = {f"SALES_{n:04d}_20240301.DAT": daily_file_bytes(
                    layout, store=f"{n:04d}", records=RECORDS, seed=n)
                    for n in range(burst * PER_BURST, (burst + 1) * PER_BURST)}
                dropped_at = time.monotonic()
                for name, data in files.items():
                    drop(bus.inbox(), name, data)
                names += files
                # Then the rescans find them all within two rescan intervals
                wait_for(partial(_at_least, discovered, (burst + 1) * PER_BURST),
                         timeout=2 * RESCAN + 0.5, interval=0.01,
                         message=f"burst {burst} discovered")
                assert time.monotonic() - dropped_at <= 2 * RESCAN, burst
            wait_for(lambda: len(files_in(bus.work() / "archive")) == len(names), timeout=90,
                     message="all archived")
        # And each was processed exactly once
        assert discovered() == BURSTS * PER_BURST
        archived = sorted(e["file"] for e in bus.events("pos_file.archived"))
        assert archived == sorted(names) == files_in(bus.work() / "archive")
        assert sum(e["published"] for e in bus.events("pos_file.archived")) == bus.queued() \
            == BURSTS * PER_BURST * RECORDS
        assert bus.events("pos_file.duplicate") == [] and files_in(bus.inbox()) == []
    finally:
        bus.close()
