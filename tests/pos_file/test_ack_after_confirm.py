"""The runtime owns the pos_file source's acknowledgement (``integration_bus.source_batch``): the
file ledger moves, lines are dead-lettered and the file is archived only in the ack the runtime
calls after the broker answered — against the real RabbitMQ.

- a window the broker nacks (its route queue is full) is not recorded as done: the ledger never
  counts more than the queue took, the file stays in processing/, and the window is read again
  until the broker takes it; then every line has exactly one effect;
- lines no route takes are never counted as confirmed: each is dead-lettered with file:line and
  the file is archived once the ack moved past them;
- a window read but never acked (the process stopped between publish and ack) is read again,
  confirmed or not: only the ack moves the ledger.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from connectors.pos_file import PosFileSource
from connectors.pos_file.lane import daily_file_bytes
from integration_bus.connector import BatchSource, SourceBatch, run_batch_source
from integration_bus.store.schema import dead_letters
from tests.pos_file.support import PosBus, daily_layout, drop, files_in, open_pos_bus, source_yaml
from tests.support.probe import running, wait_for

pytestmark = pytest.mark.rabbitmq

NAME = "SALES_0042_20240301.DAT"
RECORDS = 30  # sale lines 2..31 (line 1 is the header)
WINDOW = 5
QUEUE_LIMIT = 12  # the route queue takes this many, then the broker nacks


class ReadLog:
    """A real BatchSource passed through, noting the first line of every window it read."""

    def __init__(self, source: PosFileSource) -> None:
        self.name = source.name
        self.inner = source
        self.first_lines: list[int] = []
        self._lock = threading.Lock()

    def read(self, stop: threading.Event) -> SourceBatch | None:
        batch = self.inner.read(stop)
        if batch is not None and batch.envelopes:
            with self._lock:
                self.first_lines.append(batch.envelopes[0].headers["source_ref"]["line"])
        return batch

    def read_again(self) -> bool:
        with self._lock:
            return len(set(self.first_lines)) < len(self.first_lines)

    def close(self) -> None:
        self.inner.close()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def _route_queue_limited(url: str, queue: str, limit: int) -> Iterator[None]:
    """A policy on ``queue``: at ``limit`` messages the broker nacks further publishes."""
    vhost = url.rsplit("/", 1)[1]
    _rabbitmqctl("set_policy", "-p", vhost, "--apply-to", "queues", "limit-route",
                 f"^{queue}$", f'{{"max-length": {limit}, "overflow": "reject-publish"}}')
    try:
        yield
    finally:
        _rabbitmqctl("clear_policy", "-p", vhost, "limit-route")


@pytest.fixture
def small_windows(tmp_path: Path, rabbitmq_url: str) -> Iterator[PosBus]:
    bus = open_pos_bus(tmp_path, rabbitmq_url,
                       sources=source_yaml(extra=f"window: {WINDOW}\nwatch: polling"))
    try:
        yield bus
    finally:
        bus.close()


def _sales() -> bytes:
    return daily_file_bytes(daily_layout(), store="0042", records=RECORDS)


def _run_through_the_runtime_loop(bus: PosBus, source: BatchSource,
                                  stop: threading.Event) -> None:
    publisher = bus.bus.publisher()
    try:
        run_batch_source(source, publisher, stop)
    finally:
        publisher.close()
        source.close()


def test_a_nacked_window_is_not_acknowledged_and_is_read_again(small_windows: PosBus,
                                                                rabbitmq_url: str) -> None:
    bus = small_windows
    data = _sales()
    sha256 = hashlib.sha256(data).hexdigest()
    source = ReadLog(bus.source())
    assert isinstance(source.inner, BatchSource)  # the runtime drives it: read, publish, ack
    # Given a route queue the broker fills up after QUEUE_LIMIT messages (no worker drains it)
    with _route_queue_limited(rabbitmq_url, "bus.route.sales", QUEUE_LIMIT):
        drop(bus.inbox(), NAME, data)
        # When the source publishes the file window by window through the runtime's loop
        with running(lambda stop: _run_through_the_runtime_loop(bus, source, stop)):
            wait_for(source.read_again, timeout=30, message="a nacked window read again")
            # Then the ledger counts no more than the broker took, and the file is held
            entry = bus.entry("0042", sha256)
            assert entry is not None and entry.state == "publishing"
            assert 0 < entry.confirmed <= bus.queued() < RECORDS
            assert entry.next_line == entry.confirmed + 1  # lines 2.. are the records
            assert files_in(bus.work() / "processing" / "node-a") == [NAME]
            assert files_in(bus.work() / "archive") == []
            assert bus.bus.store.dead_letters() == []
            # the lines after the last recorded one are the ones read again
            assert source.first_lines.count(entry.next_line + 1) >= 2, source.first_lines
            # When the queue is drained and the limit lifted
            with bus.running_worker():
                wait_for(lambda: files_in(bus.work() / "archive") == [NAME], timeout=60,
                         message="archived once the broker took every window")
                wait_for(lambda: bus.target.count() == RECORDS, timeout=30,
                         message=f"{RECORDS} effects")
    # Then every line had exactly one effect and the ledger counted each once
    assert bus.target.duplicates() == {}
    assert set(bus.target.effects) == {f"pos:0042:{sha256}:{line}"
                                       for line in range(2, RECORDS + 2)}
    entry = bus.entry("0042", sha256)
    assert entry is not None and (entry.state, entry.confirmed, entry.rejected) == (
        "archived", RECORDS, 0)


def test_lines_no_route_takes_are_dead_lettered_and_never_counted_confirmed(
        tmp_path: Path, rabbitmq_url: str) -> None:
    # Given a bus whose only route takes another type
    bus = open_pos_bus(tmp_path, rabbitmq_url,
                       sources=source_yaml(extra=f"window: {WINDOW}\nwatch: polling"),
                       routes="""
  sales:
    from: [pos.other_line]
    to: [target]""")
    try:
        data = _sales()
        sha256 = hashlib.sha256(data).hexdigest()
        drop(bus.inbox(), NAME, data)
        # When the source runs through the runtime's loop
        with running(lambda stop: _run_through_the_runtime_loop(bus, bus.source(), stop)):
            wait_for(lambda: files_in(bus.work() / "archive") == [NAME], timeout=30,
                     message="archived after the ack moved past every unroutable line")
        # Then nothing was counted confirmed, every line is a dead letter with file:line
        entry = bus.entry("0042", sha256)
        assert entry is not None and (entry.state, entry.confirmed, entry.rejected) == (
            "archived", 0, RECORDS)
        with bus.bus.store.db.begin() as conn:
            rows = conn.execute(dead_letters.select()).mappings().all()
        assert sorted(r["source_ref"]["line"] for r in rows) == list(range(2, RECORDS + 2))
        assert {r["source_ref"]["file"] for r in rows} == {NAME}
        assert {r["error_type"] for r in rows} == {"UnroutableError"}
        assert bus.target.count() == 0
    finally:
        bus.close()


def _first_line(batch: SourceBatch) -> int:
    return int(batch.envelopes[0].headers["source_ref"]["line"])


def _next_window(source: PosFileSource, stop: threading.Event) -> SourceBatch:
    """The next batch with envelopes (empty batches are rounds that found nothing yet)."""
    found: list[SourceBatch] = []

    def read() -> bool:
        batch = source.read(stop)
        if batch.envelopes:
            found.append(batch)
        return bool(found)
    wait_for(read, timeout=10, message="a window of the file")
    return found[0]


def test_a_window_read_but_never_acked_is_read_again(small_windows: PosBus) -> None:
    bus = small_windows
    drop(bus.inbox(), NAME, _sales())
    source, publisher, stop = bus.source(), bus.bus.publisher(), threading.Event()
    try:
        # Given the first window read, published and confirmed, but its ack never called
        first = _next_window(source, stop)
        count = len(first.envelopes)  # the window's lines hold the header too
        assert _first_line(first) == 2 and count == WINDOW - 1
        assert publisher.publish_many(first.envelopes) == [None] * count
        # When the source is read again: the same window, since nothing acknowledged it
        again = _next_window(source, stop)
        assert [e.idempotency_key for e in again.envelopes] == [
            e.idempotency_key for e in first.envelopes]
        # When that one is acked after its confirms, the ledger moves and the next window follows
        again.ack(publisher.publish_many(again.envelopes))
        entry = bus.entry("0042", hashlib.sha256(_sales()).hexdigest())
        assert entry is not None and (entry.confirmed, entry.next_line) == (count, WINDOW)
        assert _first_line(_next_window(source, stop)) == WINDOW + 1
    finally:
        publisher.close()
        source.close()
