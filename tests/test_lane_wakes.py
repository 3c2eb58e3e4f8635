"""A lane waiting while a sink call runs sleeps on its sockets until something happens: the
call's end, the answer of a settlement in flight (PostgreSQL), or the next deliveries. It does
not poll in short slices (integration_bus/sinkcalls.py, ``SinkCalls.wake_fd``). Against real
RabbitMQ (and PostgreSQL), with the wait's slice made far longer than the test waits."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel, ConfigDict

from integration_bus.connector import ConnectorContext, ConnectorPlugin, Envelope
from integration_bus.lane import Lane
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from integration_bus.testing import running, wait_for
from tests.conftest import write_config
from tests.support.probe import registry_with
from tests.support.publishing import publish_orders

pytestmark = pytest.mark.rabbitmq

CONFIG = """
broker:
  url: "{broker}"
  prefetch: 200
  batch_size: 50
store:
  url: "{store}"
sinks:
  steps:
    connector: steps
routes:
  orders:
    from: [order.*]
    to: [steps]
"""


class StepsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Steps:
    """A batch sink that runs the test's step for each call: ``step(call_number, envelopes)``."""

    def __init__(self, context: ConnectorContext, step: Any) -> None:
        self.name = context.instance
        self._step = step
        self.calls = 0
        self.delivered: list[str] = []

    def deliver(self, envelope: Envelope) -> None:
        self.deliver_many([envelope])

    def deliver_many(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        self.calls += 1
        self._step(self.calls, envelopes)
        self.delivered.extend(e.id for e in envelopes)
        return [None] * len(envelopes)

    def close(self) -> None:
        pass


def _bus(tmp_path: Path, rabbitmq_url: str, store: str, step: Any) -> tuple[Bus, list[Steps]]:
    made: list[Steps] = []

    def create(_config: Any, context: ConnectorContext) -> Steps:
        made.append(Steps(context, step))
        return made[-1]

    registry = registry_with(ConnectorPlugin(name="steps", summary="test sink run in steps",
                                             sink_config=StepsConfig, create_sink=create))
    config_dir = write_config(tmp_path, CONFIG.format(broker=rabbitmq_url, store=store))
    return Bus(load_config(config_dir, registry, {}), registry=registry), made


@pytest.fixture
def long_slices(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """A minute per wait of the lane's meanwhile work (the default is 50 ms); the event is set
    while the lane is in one (reading ahead), so that a step can wait until it is."""
    monkeypatch.setattr("integration_bus.sinkcalls.MEANWHILE_SLICE", 60.0)
    inside = threading.Event()
    read_ahead = Lane._read_ahead

    def watched(self: Lane, wait: float) -> bool:
        inside.set()
        try:
            return read_ahead(self, wait)
        finally:
            inside.clear()

    monkeypatch.setattr(Lane, "_read_ahead", watched)
    return inside


def test_the_end_of_a_sink_call_wakes_the_lane_waiting_for_deliveries(
        tmp_path: Path, rabbitmq_url: str, long_slices: threading.Event) -> None:
    def step(call: int, envelopes: Sequence[Envelope]) -> None:
        if call > 1:  # past the first, cautious, delivery: the lane reads ahead meanwhile
            assert long_slices.wait(10), "the lane is not waiting on its sockets"

    bus, sinks = _bus(tmp_path, rabbitmq_url, "sqlite:///var/bus.db", step)
    with bus.open():
        # 60 messages: after the first alone, a batch of 50 whose call the lane waits out
        # with 9 buffered, fewer than a batch, so that it waits on its socket for more
        envelopes = publish_orders(bus, 60)
        with running(bus.worker(["orders"]).run):
            wait_for(lambda: bus.store.count_events("delivered", route="orders") == 60,
                     timeout=30, message="60 deliveries settled, each call's end seen at once")
        assert sorted(sinks[0].delivered) == sorted(e.id for e in envelopes)
        assert sinks[0].calls >= 3


@pytest.mark.postgres
def test_a_settlement_committing_wakes_the_lane_while_a_sink_call_waits(
        tmp_path: Path, rabbitmq_url: str, postgres_url: str,
        long_slices: threading.Event) -> None:
    lane: list[Lane] = []
    taken = [0]  # deliveries of the batches whose settlement is held
    third, release = threading.Event(), threading.Event()

    def step(call: int, envelopes: Sequence[Envelope]) -> None:
        if call == 2:
            # the first batch after the journal is locked: its settlement is held; before it
            # ends, the lane buffers the rest, so that the next batch runs at once after it
            taken[0] = len(envelopes)
            consumer: Any = lane[0]._consumer

            def read() -> int:  # buffered, or taken as the next batch, prepared ahead
                following = lane[0]._next
                return len(consumer._buffer) + (len(following[0]) if following else 0)

            wait_for(lambda: read() >= min(60 - taken[0], 50), timeout=10,
                     message="the rest of the 60 read ahead")
        elif call == 3:
            third.set()
            assert release.wait(30), "the test never let the third call go"

    bus, sinks = _bus(tmp_path, rabbitmq_url, postgres_url, step)
    with bus.open():
        worker = bus.worker(["orders"])
        lane.append(worker.lanes[0])
        assert lane[0]._behind is not None  # PostgreSQL settles behind
        with running(worker.run):
            publish_orders(bus, 1)  # the first call: one delivery, settled and acked
            wait_for(lambda: worker.state.batches == 1, message="the first batch acked")
            lock = psycopg.connect(postgres_url.replace("postgresql+psycopg://",
                                                        "postgresql://"))
            try:
                # Given the second batch's settlement held by a lock on the journal, and the
                # third batch's sink call under way, the lane waiting on its sockets
                lock.execute("LOCK TABLE journal IN EXCLUSIVE MODE")
                publish_orders(bus, 60)
                assert third.wait(30), "the third sink call never started"
                assert long_slices.wait(10), "the lane is not waiting on its sockets"
                assert worker.state.batches == 1  # the second is not acked: not committed
                # When the settlement can commit
                lock.rollback()
            finally:
                lock.close()
            # Then its answer wakes the lane, which acks the batch while the call still runs
            wait_for(lambda: worker.state.batches == 2, timeout=10,
                     message="the second batch acked while the third call runs")
            assert not release.is_set() and sinks[0].calls == 3
            release.set()
            wait_for(lambda: bus.store.count_events("delivered", route="orders") == 61,
                     timeout=30, message="61 deliveries settled")
