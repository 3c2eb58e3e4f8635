"""Settling behind on PostgreSQL (integration_bus/store/behind.py): a lane's settlement commits
while the lane runs its next batch, and the batch is acked only once it has. Against a real
PostgreSQL (and RabbitMQ for the worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from sqlalchemy import make_url, select

from integration_bus.envelope import Envelope, new_id
from integration_bus.errors import StoreUnavailable
from integration_bus.runtime import Bus
from integration_bus.store import Claim, JournalEntry, Settlement, Store, utcnow
from integration_bus.store.behind import SettleBehind, SettleFailed, eligible
from integration_bus.store.schema import crash_markers, journal, ledger
from integration_bus.testing import wait_for
from tests.conftest import write_config

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parent.parent


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _settlement(prefix: str, now: Any) -> Settlement:
    ids = [f"{prefix}-{i}" for i in range(4)]
    return Settlement(journal=[
        JournalEntry(ids[0], "received", now, route="orders", attempt=0, mapping_version="v1",
                     detail={"type": "order.created", "redelivered": False,
                             "delivery_count": 0, "key": "k0"}),
        JournalEntry(ids[0], "delivered", now, route="orders", sink="erp", attempt=0,
                     detail={"output_id": "o1", "key": "k0", "recovered": True}),
        JournalEntry(ids[1], "received", now, route="orders", attempt=2,
                     detail={"type": "Bestellung für Zoë ✓", "nested": {"a": [1, 2.5, None]},
                             "amount": Decimal("12.30")}),
        JournalEntry(ids[2], "filtered", now, route="orders"),  # no detail at all
        JournalEntry(ids[3], "duplicate", now, route="orders", sink="erp",
                     detail={"output_id": "o3", "key": "x" * 5000}),  # clipped
    ])


def _rows(store: Store, prefix: str) -> list[tuple[Any, ...]]:
    with store.db.begin(read_only=True) as conn:
        rows = conn.execute(select(journal).where(journal.c.envelope_id.like(f"{prefix}-%"))
                            .order_by(journal.c.id)).all()
    return [(r.envelope_id.split("-", 1)[1], r.event, r.route, r.sink, r.attempt, r.at,
             r.mapping_version, r.detail) for r in rows]


class Parts:
    """A store, a lane's SettleBehind on it, and a connection that can lock the journal."""

    def __init__(self, url: str) -> None:
        self.store = Store.open(url)
        self.behind = SettleBehind(make_url(url), redaction=self.store.redaction)
        self.lock = psycopg.connect(_libpq(url))

    def lock_journal(self) -> None:
        """Until ``lock.rollback()``, no settlement can commit."""
        self.lock.execute("LOCK TABLE journal IN EXCLUSIVE MODE")

    def committed(self, message: str = "the settlement committed") -> None:
        wait_for(lambda: self.behind.done(0.1), timeout=10, message=message)

    def close(self) -> None:
        self.lock.close()
        self.behind.close()
        self.store.close()


@pytest.fixture
def parts(postgres_url: str) -> Iterator[Parts]:
    parts = Parts(postgres_url)
    try:
        yield parts
    finally:
        parts.close()


def test_a_settlement_sent_behind_stores_what_an_inline_one_stores(parts: Parts) -> None:
    store, behind = parts.store, parts.behind
    now = utcnow()
    # Given the same settlement twice, with a claim to complete and a marker to remove each
    inline, sent = _settlement("inline", now), _settlement("behind", now)
    for settlement, tag in ((inline, "a"), (sent, "b")):
        store.claim([Claim("erp", f"key-{tag}", f"owner-{tag}", f"env-{tag}")],
                    lease=timedelta(minutes=5))
        store.mark_executing(f"b:{tag}", [("orders", f"env-{tag}")], "me")
        settlement.done.append(("erp", f"key-{tag}", f"owner-{tag}"))
        settlement.unmark.append((f"b:{tag}", None))
    assert eligible(sent)
    # When one is written inline and the other sent behind
    store.settle(inline)
    behind.send(sent)
    parts.committed()
    # Then the journal rows are the same, value for value (detail clipped and encoded by
    # the bus's encoder alike, a missing detail stored alike)
    assert _rows(store, "behind") == _rows(store, "inline")
    assert len(_rows(store, "behind")) == 5
    with store.db.begin(read_only=True) as conn:
        states = dict(conn.execute(select(ledger.c.idempotency_key, ledger.c.state)).all())
        marks = conn.execute(select(crash_markers.c.id)).scalars().all()
    assert states == {"key-a": "done", "key-b": "done"}
    assert marks == []


def test_the_next_batch_is_marked_first_and_on_its_own(parts: Parts) -> None:
    # Given the journal locked, so that a settlement cannot commit
    parts.lock_journal()
    keys = [("orders", new_id()) for _ in range(3)]
    parts.behind.send(_settlement("held", utcnow()), mark=("b:next", keys, "me"))
    # Then the next batch's marker commits all the same, before the settlement
    parts.behind.marked()
    found = parts.store.crash_markers(keys, "someone else")
    assert set(found) == set(keys) and {m.row for m in found.values()} == {"b:next"}
    assert parts.behind.done(0.3) is False
    parts.lock.rollback()
    parts.committed()
    assert len(_rows(parts.store, "held")) == 5


def test_a_batch_prepared_ahead_is_marked_on_the_idle_connection_and_committed(
        parts: Parts, postgres_url: str) -> None:
    keys = [("orders", new_id()) for _ in range(3)]
    # Given nothing in flight: the marker is written and committed before mark returns
    assert parts.behind.mark("b:ahead", keys + keys[:1], "me") is True
    with psycopg.connect(_libpq(postgres_url)) as other:  # seen from another connection
        [(owner, members)] = other.execute(
            "SELECT owner, members FROM crash_markers WHERE id = 'b:ahead'").fetchall()
    assert owner == "me" and [tuple(m) for m in members] == keys  # each key once
    found = parts.store.crash_markers(keys, "someone else")
    assert {m.row for m in found.values()} == {"b:ahead"}
    # and the settlement that removes it goes the same way afterwards
    settlement = _settlement("ahead", utcnow())
    settlement.unmark.append(("b:ahead", None))
    parts.behind.send(settlement)
    parts.committed()
    assert parts.store.crash_markers(keys, "someone else") == {}
    # While a settlement is in flight (held by a lock), nothing is marked on the connection:
    # the caller marks through the pool instead
    parts.lock_journal()
    parts.behind.send(_settlement("held", utcnow()))
    assert parts.behind.mark("b:other", keys, "me") is False
    assert parts.store.crash_markers(keys, "someone else") == {}
    parts.lock.rollback()
    parts.committed()
    assert len(_rows(parts.store, "held")) == 5


def test_a_marker_on_a_lost_connection_is_an_outage_then_the_next_one_reconnects(
        parts: Parts, postgres_url: str) -> None:
    keys = [("orders", new_id())]
    assert parts.behind.mark("b:first", keys, "me")
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as admin:
        # its server process ends (waited for, up to 5 s) while the connection is idle
        admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                      "WHERE datname = current_database() "
                      "AND query LIKE 'INSERT INTO crash_markers%' AND pid <> pg_backend_pid()")
    with pytest.raises(StoreUnavailable):
        parts.behind.mark("b:second", keys, "me")
    assert parts.behind.mark("b:third", keys, "me")  # over a new connection
    with parts.store.db.begin(read_only=True) as conn:
        rows = conn.execute(select(crash_markers.c.id).order_by(crash_markers.c.id)).scalars()
        assert list(rows) == ["b:first", "b:third"]


def test_a_value_the_server_refuses_fails_the_settlement_whole(parts: Parts) -> None:
    settlement = _settlement("nul", utcnow())
    settlement.journal[0] = JournalEntry("nul-0", "received", utcnow(), route="orders",
                                         detail={"type": "order\x00created"})
    parts.behind.send(settlement)
    with pytest.raises(SettleFailed, match=r"22P05|unsupported Unicode"):
        parts.committed("an answer")
    assert _rows(parts.store, "nul") == []  # one statement: nothing of it was written
    # the lane then writes it inline, which makes the value storable
    parts.store.settle(settlement)
    assert _rows(parts.store, "nul")[0][-1] == {"type": "order\ufffdcreated"}
    # and the connection serves the next settlement
    parts.behind.send(_settlement("after", utcnow()))
    parts.committed()
    assert len(_rows(parts.store, "after")) == 5


def test_a_connection_lost_with_a_settlement_in_flight_is_a_failure_not_a_commit(
        parts: Parts, postgres_url: str) -> None:
    parts.lock_journal()
    parts.behind.send(_settlement("lost", utcnow()))
    # When its server process is terminated while the settlement waits for the lock
    wait_for(lambda: _activity(postgres_url, "Lock") == 1, timeout=10,
             message="the settlement waits for the lock")
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() "
                      "AND query LIKE '%json_to_recordset%' AND pid <> pg_backend_pid()")
    # Then the lane is told it failed (and writes it again inline), never that it committed
    with pytest.raises(SettleFailed):
        parts.committed("an answer")
    parts.lock.rollback()
    assert _rows(parts.store, "lost") == []
    # and the next settlement goes over a new connection
    parts.behind.send(_settlement("again", utcnow()))
    parts.committed()
    assert len(_rows(parts.store, "again")) == 5


def _ready(config_dir: Path, queue: str) -> int:
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        stats = bus.transport.queue_stats(queue)
        assert stats is not None
        return stats.messages


@pytest.mark.rabbitmq
@pytest.mark.faults
def test_a_worker_killed_while_its_settlement_waits_has_acked_none_of_that_batch(
        tmp_path: Path, rabbitmq_url: str, postgres_url: str) -> None:
    # Given a worker in its own process on PostgreSQL, past its first message (a lane starts
    # cautious, with prefetch 1), and then the journal locked, so that no settlement commits
    config_dir = write_config(tmp_path, f"""
        broker: {{url: "{rabbitmq_url}", prefetch: 200, batch_size: 100}}
        store: {{url: "{postgres_url}"}}
        sinks:
          out: {{connector: jsonl, path: var/out.jsonl}}
        routes:
          orders: {{from: [order.created], to: [out]}}
        """)
    envelopes = [Envelope.create("order.created", {"n": i}, source="test") for i in range(301)]
    _publish(config_dir, envelopes[:1])
    out = tmp_path / "var" / "out.jsonl"
    log = tmp_path / "worker.log"
    args = [sys.executable, "-m", "integration_bus", "worker", "--config-dir", str(config_dir)]
    env = {**os.environ, "BUS_LOG_LEVEL": "info"}
    workers: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as sink_log:
            workers.append(subprocess.Popen(args, cwd=REPO, stdout=sink_log, stderr=sink_log,
                                            env=env))
        return workers[-1]

    store = Store.open(postgres_url)
    lock = psycopg.connect(_libpq(postgres_url))
    try:
        worker = start()
        wait_for(lambda: store.count_events("delivered", route="orders") == 1, timeout=60,
                 message="the first message settled")
        lock.execute("LOCK TABLE journal IN EXCLUSIVE MODE")
        _publish(config_dir, envelopes[1:])
        # When it has delivered messages whose settlement waits for the lock, and is killed
        # with SIGKILL there (an ack sent before the commit would be on the wire by then: the
        # lane would have sent it right after the settlement)
        wait_for(lambda: len(_lines(out)) >= 2 and _activity(postgres_url, "Lock") >= 1,
                 timeout=60, message="a settlement waiting for the lock")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        # Then the broker holds every one of them again: none was acked before its commit
        assert _ready(config_dir, "bus.route.orders") == 300
        lock.rollback()
        # And a new worker delivers each of them once (the ledger and the sink's lookup), none
        # lost
        wait_for(lambda: _activity(postgres_url) == 0, timeout=10,
                 message="the killed worker's statement ended")
        worker = start()
        wait_for(lambda: len(set(_lines(out))) >= 301
                 and _ready(config_dir, "bus.route.orders") == 0, timeout=90,
                 message="all 301 delivered")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        keys = [orjson.loads(line)["idempotency_key"] for line in _lines(out)]
        assert sorted(keys) == sorted(e.idempotency_key for e in envelopes)
        assert store.dead_letters() == []
        assert store.count_events("delivered", route="orders") == 301
    finally:
        lock.close()
        for process in workers:  # a failed step leaves none running
            if process.poll() is None:
                process.kill()
                process.wait(10)
        store.close()


def _publish(config_dir: Path, envelopes: list[Envelope]) -> None:
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        publisher = bus.publisher()
        assert publisher.publish_many(envelopes) == [None] * len(envelopes)
        publisher.close()


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def _activity(url: str, waiting_on: str | None = None) -> int:
    """Settlements the server is executing in this database (or, with ``waiting_on``, waiting
    in)."""
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s "
                           "AND datname = current_database() "
                           "AND pid <> pg_backend_pid() AND state = 'active' AND "
                           "(%s::text IS NULL OR wait_event_type = %s)",
                           ("%json_to_recordset%", waiting_on, waiting_on)).fetchone()
    return int(row[0]) if row else 0


def test_a_copy_claimed_while_its_original_settles_is_claimed_again_once_it_has(
        parts: Parts) -> None:
    from integration_bus.lane import _SettledFirst
    from integration_bus.store import ClaimOutcome

    store, behind, lease = parts.store, parts.behind, timedelta(minutes=5)
    # Given an original delivered, its claim's "done" in a settlement still in flight
    # (the journal locked, so that it cannot commit yet)
    assert store.claim([Claim("erp", "sale-1", "original#0", "original")],
                       lease=lease) == [ClaimOutcome.CLAIMED]
    parts.lock_journal()
    settlement = _settlement("first", utcnow())
    settlement.done.append(("erp", "sale-1", "original#0"))
    behind.send(settlement)

    class Lane:  # what _SettledFirst asks of its lane: the batch settling, and waiting
        _settling: object = "the original's batch"

        def _settled(self, stop: object) -> None:
            parts.lock.rollback()
            parts.committed()
            self._settling = None

    lane = Lane()
    claims = [Claim("erp", "sale-1", "copy#0", "copy"),
              Claim("erp", "sale-2", "other#0", "other")]
    # When the next batch, with a copy of it, claims through the lane
    outcomes = _SettledFirst(lane, store, None).claim(claims, lease=lease)  # type: ignore[arg-type]
    # Then the copy was claimed again after the commit: a duplicate, not a busy retry
    assert outcomes == [ClaimOutcome.DONE, ClaimOutcome.CLAIMED]
    assert lane._settling is None
    # (as it was busy before: the store alone answers so while the original is pending)
    assert store.claim([Claim("erp", "sale-3", "a#0", "a")], lease=lease) == \
        [ClaimOutcome.CLAIMED]
    assert store.claim([Claim("erp", "sale-3", "b#0", "b")], lease=lease) == \
        [ClaimOutcome.BUSY]


def test_a_connection_numbered_past_fd_setsize_is_waited_on_all_the_same(
        postgres_url: str) -> None:
    import resource

    # Given a process with more than 1,024 descriptors open (a worker with many lanes, files
    # and sockets), so that the lane's connection gets a number select() cannot take
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit of open files ({hard}) is below 1,200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    spare: list[int] = []
    try:
        with open(os.devnull) as devnull:
            while not spare or spare[-1] < 1100:
                spare.append(os.dup(devnull.fileno()))
        parts = Parts(postgres_url)
        try:
            parts.behind.send(_settlement("high", utcnow()))
            assert parts.behind._settles.pgconn.socket > 1024
            # Then its settlement is waited for and committed, not failed as a lost connection
            parts.committed()
            assert len(_rows(parts.store, "high")) == 5
        finally:
            parts.close()
    finally:
        for fd in spare:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.rabbitmq
@pytest.mark.parametrize("setting", [True, False])
def test_store_settle_behind_turns_it_on_and_off(
        tmp_path: Path, rabbitmq_url: str, postgres_url: str, setting: bool) -> None:
    def lanes_behind(root: Path, store: str) -> list[bool]:
        config_dir = write_config(root, f"""
            broker: {{url: "{rabbitmq_url}"}}
            store: {{url: "{store}", settle_behind: {str(setting).lower()}}}
            sinks:
              out: {{connector: jsonl, path: var/out.jsonl}}
            routes:
              orders: {{from: [order.created], to: [out]}}
            """)
        with Bus.from_config_dir(config_dir, environ={}) as bus:
            worker = bus.worker()
            assert worker.options.settle_behind is setting
            return [lane._behind is not None for lane in worker.lanes]

    assert lanes_behind(tmp_path / "pg", postgres_url) == [setting, setting]  # + dead letters
    # SQLite settles inline whatever the setting says
    assert lanes_behind(tmp_path / "sqlite", "sqlite:///var/bus.db") == [False, False]
