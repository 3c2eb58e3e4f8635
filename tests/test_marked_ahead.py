"""A lane marks its next batch ahead (docs/lifecycle.md): in the settlement of the batch before,
or, once the read-ahead buffer holds it whole, while the sink call of the batch before waits,
and then runs its pipelines there too. On RabbitMQ every envelope is still marked executing
before its pipeline runs and while its sink runs, the marks are gone once everything is
settled, and most batches start without a marker transaction on their path; no batch stands
marked ahead while a crash suspect runs alone, nor after its connection is lost."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import insert, select

from integration_bus.batch import Batch
from integration_bus.connector import ConnectorContext, ConnectorPlugin, Envelope
from integration_bus.errors import BrokerUnavailable
from integration_bus.lane import Lane
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from integration_bus.store import Settlement, Store, markers
from integration_bus.store.schema import crash_markers
from integration_bus.testing import running, wait_for
from integration_bus.transport.amqp_consume import AmqpConsumer
from tests.conftest import write_config
from tests.support.probe import registry_with
from tests.support.publishing import publish_orders

CONFIG = """
broker:
  url: "{broker}"
  prefetch: 200
  batch_size: 50
store:
  url: sqlite:///var/bus.db
sinks:
  watch:
    connector: watch
routes:
  orders:
    from: [order.*]
    to: [watch]
"""


class WatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Watch:
    """A sink that looks, for every envelope it is handed, whether the store has it marked
    executing (as another worker would see it after a crash)."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        self.lock = threading.Lock()
        self.marked: dict[str, bool] = {}
        self._store: Store | None = None

    def deliver(self, envelope: Envelope) -> None:
        if self._store is None:  # opened on the sink's own thread
            self._store = Store.open(f"sqlite:///{self.store_path}")
        found = self._store.crash_markers([("orders", envelope.id)], "someone-else")
        with self.lock:
            self.marked[envelope.id] = ("orders", envelope.id) in found

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


class WatchSink:
    def __init__(self, context: ConnectorContext, watch: Watch) -> None:
        self.name = context.instance
        self._watch = watch

    def deliver(self, envelope: Envelope) -> None:
        self._watch.deliver(envelope)

    def close(self) -> None:
        self._watch.close()


def watch_plugin(watch: Watch) -> ConnectorPlugin:
    return ConnectorPlugin(name="watch", summary="test sink looking at crash markers",
                           sink_config=WatchConfig,
                           create_sink=lambda cfg, ctx: WatchSink(ctx, watch))


def test_each_batch_is_marked_while_it_runs_most_ahead_of_it(
        rabbitmq_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    watch = Watch(tmp_path / "var" / "bus.db")
    registry = registry_with(watch_plugin(watch))
    config_dir = write_config(tmp_path, CONFIG.format(broker=rabbitmq_url))
    with Bus(load_config(config_dir, registry, {}), registry=registry).open() as bus:
        envelopes = publish_orders(bus, 1000)
        marks = [0]
        own_mark = bus.store.mark_executing

        def counted(*args: Any) -> None:
            marks[0] += 1
            own_mark(*args)

        bus.store.mark_executing = counted  # type: ignore[method-assign,assignment]
        ahead = [0]  # of them, written while the sink call of the batch before waited
        prepare = Lane._prepare_ahead

        def prepare_counted(lane: Lane) -> None:
            before = marks[0]
            prepare(lane)
            ahead[0] += marks[0] - before

        monkeypatch.setattr(Lane, "_prepare_ahead", prepare_counted)
        batches = [0]

        def on_batch(batch: Any) -> None:
            batches[0] += 1

        with running(bus.worker(["orders"], on_batch=on_batch).run):
            wait_for(lambda: bus.store.count_events("delivered", route="orders") == 1000,
                     message="1000 deliveries settled")
        # Every envelope was marked executing while its sink ran...
        assert len(watch.marked) == 1000
        assert [i for i, marked in watch.marked.items() if not marked] == []
        # ... the marks are gone once everything is settled ...
        ids = [("orders", e.id) for e in envelopes]
        assert bus.store.crash_markers(ids, "someone-else") == {}
        # ... and most batches were marked ahead, off their own path: by the settlement of
        # the one before them or while its sink call waited (the first batch, taken one
        # message at a time until a fresh one shows, never is)
        assert batches[0] >= 20
        assert marks[0] - ahead[0] < batches[0] // 2, (marks[0], ahead[0], batches[0])


def test_a_settlement_marks_the_next_batch_in_the_row_it_leaves(store_url: str,
                                                                 tmp_path: Path) -> None:
    store = Store.open(store_url, root=tmp_path)
    try:
        first = [("orders", "E1"), ("orders", "E2")]
        following = [("orders", "E3")]
        store.mark_executing("b:1", first, "nohost.invalid:1:x")
        store.mark_executing("b:9", [("orders", "E9")], "nohost.invalid:1:x")
        # Settling the batch of row b:1 (and b:9) while marking the next batch in b:1
        store.settle(Settlement(unmark=[("b:1", None), ("b:9", None)],
                                mark=("b:1", following, "nohost.invalid:1:x")))
        found = store.crash_markers(first + following + [("orders", "E9")], "someone-else")
        # leaves b:1 naming only the next batch, as a fresh mark (no crash counted), b:9 gone
        assert set(found) == {("orders", "E3")}
        assert found["orders", "E3"].row == "b:1" and found["orders", "E3"].crashes == 0
        # and a settlement that marks ahead into a new row removes what it unmarks
        store.settle(Settlement(unmark=[("b:1", None)],
                                mark=("b:2", [("orders", "E4")], "nohost.invalid:1:x")))
        found = store.crash_markers([("orders", "E3"), ("orders", "E4")], "someone-else")
        assert set(found) == {("orders", "E4")} and found["orders", "E4"].row == "b:2"
    finally:
        store.close()


def test_a_mark_stores_what_sqlalchemy_stores(store_url: str, tmp_path: Path) -> None:
    # markers.add sends its upsert to the driver as it is (the hot path): the row must hold
    # what SQLAlchemy's own insert of the same values holds, and a mark over a row with a
    # crash record starts that record afresh.
    store = Store.open(store_url, root=tmp_path)
    at = datetime(2026, 12, 6, 4, 5, 6, 789012, tzinfo=UTC)
    keys = [("orders", "E1"), ("orders", "E2"), ("orders", "E1")]
    as_text = "::text" if store.db.dialect == "postgresql" else ""
    try:
        with store.db.begin() as conn:
            conn.execute(insert(crash_markers).values(
                id="b:ref", owner="w", crashes=0, started_at=at, members=[["orders", "E1"],
                                                                          ["orders", "E2"]]))
            conn.execute(insert(crash_markers).values(
                id="b:1", owner="old", crashes=2, started_at=at, members=[["x", "y"]],
                history=[{"attempt": 1}]))
            markers.add(conn, "b:1", keys, "w", at)
            rows = {r[0]: r[1:] for r in conn.exec_driver_sql(
                f"SELECT id, owner, crashes, started_at{as_text}, members{as_text}, "
                f"history{as_text} FROM crash_markers")}
        assert rows["b:1"] == rows["b:ref"]
        assert rows["b:1"][-1] is None  # the crash record starts afresh
        store.settle(Settlement(unmark=[("b:ref", None)]))
        found = store.crash_markers([("orders", "E1"), ("orders", "E2")], "someone-else")
        assert {k: (m.row, m.crashes, m.started_at.replace(tzinfo=UTC))  # SQLite's: naive
                for k, m in found.items()} == {
            ("orders", "E1"): ("b:1", 0, at), ("orders", "E2"): ("b:1", 0, at)}
    finally:
        store.close()


def marker_rows(bus: Bus) -> list[tuple[str, int]]:
    """Every crash-marker row: its id and how many envelopes it names."""
    with bus.store.db.begin(read_only=True) as conn:
        return [(r.id, len(r.members or []))
                for r in conn.execute(select(crash_markers)).all()]


def published_bus(tmp_path: Path, rabbitmq_url: str, count: int) -> Bus:
    watch = Watch(tmp_path / "var" / "bus.db")
    registry = registry_with(watch_plugin(watch))
    config_dir = write_config(tmp_path, CONFIG.format(broker=rabbitmq_url))
    bus = Bus(load_config(config_dir, registry, {}), registry=registry).open()
    publish_orders(bus, count)
    return bus


def test_nothing_stands_marked_ahead_while_a_suspect_runs_alone(rabbitmq_url: str,
                                                               tmp_path: Path) -> None:
    # A suspect holds the gate exclusively: whatever it runs, a crash names only it. A lane
    # that was chaining batches lets it in without leaving the next batch marked.
    with published_bus(tmp_path, rabbitmq_url, 1000) as bus:
        batches = [0]
        chaining = threading.Event()

        def on_batch(batch: Any) -> None:  # on the lane's thread, the gate held shared
            batches[0] += 1
            if batches[0] == 4:  # mid-run: hold the lane until the suspect waits for the gate
                chaining.set()
                wait_for(bus.gate.writer_waiting, message="the suspect waiting for the gate")

        with running(bus.worker(["orders"], on_batch=on_batch).run):
            assert chaining.wait(30), "the lane never settled 4 batches"
            with bus.gate.exclusive():
                # held as a suspect holds it (the lane is stopped at the gate meanwhile)
                during = marker_rows(bus)
                delivered = bus.store.count_events("delivered", route="orders")
            wait_for(lambda: bus.store.count_events("delivered", route="orders") == 1000,
                     message="1000 deliveries settled")
        assert delivered < 1000  # the gate was taken mid-run (the lane waited for it)
        assert [row for row in during if row[1]] == []


def test_a_batch_marked_ahead_loses_its_mark_with_its_connection(
        rabbitmq_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The connection breaks after a settlement marked the next batch (its ack fails): that
    # batch never runs here, the broker redelivers it, and its mark must not outlive it.
    acks = [0]
    ack = AmqpConsumer.ack

    def ack_once_broken(self: AmqpConsumer, deliveries: Any) -> None:
        acks[0] += 1
        if acks[0] == 4:
            raise BrokerUnavailable("connection lost while acking (injected)")
        ack(self, deliveries)

    monkeypatch.setattr(AmqpConsumer, "ack", ack_once_broken)
    with published_bus(tmp_path, rabbitmq_url, 1000) as bus:
        worker = bus.worker(["orders"])
        with running(worker.run):
            wait_for(lambda: bus.store.count_events("delivered", route="orders") == 1000
                     and acks[0] > 6 and worker.state.connected,
                     message="1000 deliveries settled after a reconnect")
            wait_for(lambda: bus.store.count_events("received", route="orders") >= 1000
                     and marker_rows(bus) == [], message="no marks left")
        assert "injected" in (worker.state.last_error or "")  # it did reconnect


class Gate:
    """A sink whose first call waits until the test lets it go."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.delivered: list[str] = []

    def deliver(self, envelope: Envelope) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(30), "the test never let the first sink call go"
        self.delivered.append(envelope.id)


def test_the_next_batch_is_marked_then_built_while_the_sink_call_before_waits(
        rabbitmq_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate()

    class GateSink:
        def __init__(self, context: ConnectorContext) -> None:
            self.name = context.instance

        def deliver(self, envelope: Envelope) -> None:
            gate.deliver(envelope)

        def close(self) -> None:
            pass

    registry = registry_with(ConnectorPlugin(
        name="watch", summary="test sink held on its first call", sink_config=WatchConfig,
        create_sink=lambda cfg, ctx: GateSink(ctx)))
    # each build records which deliveries it decoded, and what the store had marked then
    built: list[tuple[list[str], bool, bool]] = []  # ids, first call waiting, all marked
    build = Batch.build.__func__  # type: ignore[attr-defined]
    config_dir = write_config(tmp_path, CONFIG.format(broker=rabbitmq_url))
    with Bus(load_config(config_dir, registry, {}), registry=registry).open() as bus:

        def recorded(cls: type[Batch], deliveries: Any, *args: Any, **kwargs: Any) -> Batch:
            ids = [d.message_id for d in deliveries]
            found = bus.store.crash_markers([("orders", i) for i in ids], "someone-else")
            # after the first build (the one message taken before the prefetch opens up), a
            # build before the test lets the first sink call go is one made during that call
            built.append((ids, bool(built) and not gate.release.is_set(),
                          len(found) == len(ids)))
            return build(cls, deliveries, *args, **kwargs)  # type: ignore[no-any-return]

        monkeypatch.setattr(Batch, "build", classmethod(recorded))
        envelopes = publish_orders(bus, 300)
        with running(bus.worker(["orders"]).run):
            assert gate.entered.wait(30), "the first sink call never started"
            # while it waits, the next batch (50: batch_size) is taken whole, marked, built
            wait_for(lambda: any(waiting for _ids, waiting, _marked in built),
                     message="a batch built while the sink call before it waited")
            gate.release.set()
            wait_for(lambda: bus.store.count_events("delivered", route="orders") == 300,
                     message="300 deliveries settled")
        ahead = [(ids, marked) for ids, waiting, marked in built if waiting]
        assert len(ahead) == 1 and len(ahead[0][0]) == 50
        assert ahead[0][1], "built before its crash markers were written"
        # every delivery decoded once (the one built ahead not again), delivered once
        assert sorted(i for ids, _w, _m in built for i in ids) == sorted(e.id for e in envelopes)
        assert sorted(gate.delivered) == sorted(e.id for e in envelopes)
        assert marker_rows(bus) == []
