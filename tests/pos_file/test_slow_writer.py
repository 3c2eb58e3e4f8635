"""Slow writer (issue: 5 MB in 500 chunks, 50 ms apart), for each readiness policy: no early
pickup, and the records published are the records of the final file.

Each writer re-opens its file for every chunk (O_APPEND, no O_CREAT), so if a source claimed the
file before the writer finished, the writer's next open fails and it records an early pickup. A
negative control runs the same direct writer under the ``rename`` policy (which trusts a file
under its final name at once): it must be picked up early, proving the detection works — and
the half file must be quarantined, not half-published.
"""

from __future__ import annotations

import hashlib
import threading
from functools import partial
from pathlib import Path
from typing import Literal

import pytest

from connectors.pos_file.lane import SlowWriter, daily_file_bytes
from tests.pos_file.support import PosBus, daily_layout, files_in, open_pos_bus, source_yaml
from tests.support.probe import wait_for

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

FILE_BYTES = 5_000_000
CHUNKS, PAUSE = 500, 0.05
RECORDS = (FILE_BYTES - 61) // 122  # header and trailer lines, then 120 + CRLF per record

POLICIES: dict[str, tuple[str, Literal["rename", "marker", "direct"]]] = {
    # inbox: (readiness yaml, writer discipline)
    "rename": ("readiness: {policy: rename}", "rename"),
    "marker": ("readiness: {policy: marker, marker_suffix: .done}", "marker"),
    "stable": ("readiness: {policy: stable, stable_polls: 3, min_age: 1s}\n"
               "poll_interval: 100ms", "direct"),
    "control": ("readiness: {policy: rename}", "direct"),  # wrong policy for this writer
}


def _archived(work: Path, name: str) -> bool:
    return files_in(work / "archive") == [name]


def _set_aside(bus: PosBus, name: str) -> bool:
    control = bus.work("control")
    return name in files_in(control / "error") + files_in(control / "refused")


def _count(bus: PosBus, metric: str, source: str, outcome: str) -> float:
    value = bus.bus.metrics.registry.get_sample_value(
        f"pos_file_{metric}_total", {"source": source, "outcome": outcome})
    return value or 0.0


def test_a_slow_writer_is_never_picked_up_early(tmp_path: Path, rabbitmq_url: str) -> None:
    # Given one source per readiness policy, each on its own inbox
    sources = "\n".join(source_yaml(f"till_{name}", inbox=name, extra=extra)
                        for name, (extra, _) in POLICIES.items())
    bus = open_pos_bus(tmp_path, rabbitmq_url, sources=sources, inboxes=tuple(POLICIES))
    data = daily_file_bytes(daily_layout(), store="0042", records=RECORDS)
    assert abs(len(data) - FILE_BYTES) < 200
    name = "SALES_0042_20240301.DAT"
    try:
        writers = {policy: SlowWriter(bus.inbox(policy), name, data, chunks=CHUNKS,
                                      pause=PAUSE, discipline=discipline)
                   for policy, (_, discipline) in POLICIES.items()}
        threads = [threading.Thread(target=w.run, daemon=True) for w in writers.values()]
        sources_ = [bus.source(f"till_{policy}") for policy in POLICIES]
        with bus.running_source(sources_[0]), bus.running_source(sources_[1]), \
                bus.running_source(sources_[2]), bus.running_source(sources_[3]):
            # When four tills write the same 5 MB file slowly, each its own way
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            for policy in ("rename", "marker", "stable"):
                wait_for(partial(_archived, bus.work(policy), name), timeout=120,
                         message=f"{policy}: archived")
            wait_for(lambda: _set_aside(bus, name), timeout=30,
                     message="control: the half (or still empty) file set aside")
        # Then no policy let the source take the file before the writer finished
        sha = hashlib.sha256(data).hexdigest()
        for policy in ("rename", "marker", "stable"):
            report = writers[policy].report
            assert (report.vanished_at, report.chunks) == (None, CHUNKS), policy
            entry = bus.entry("0042", sha, source=f"till_{policy}")
            assert entry is not None and entry.size == len(data), policy
            # and the records published are exactly the records of the final file
            assert (entry.state, entry.records, entry.confirmed) == (
                "archived", RECORDS, RECORDS), policy
            assert _count(bus, "records", f"till_{policy}", "published") == RECORDS, policy
            assert _count(bus, "files", f"till_{policy}", "returned") == 0, policy
            assert files_in(bus.work(policy) / "processing" / "node-a") == []
        assert bus.queued() == 3 * RECORDS
        # The control: the direct writer under the rename policy was taken early, the half
        # file was quarantined (or refused, if still empty), and nothing of it was published
        control = writers["control"].report
        assert control.vanished_at is not None and control.vanished_at < CHUNKS
        assert _count(bus, "records", "till_control", "published") == 0
    finally:
        bus.close()
