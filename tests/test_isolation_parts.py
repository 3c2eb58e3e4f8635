"""The parts of the bulkheads without a broker: sink deadlines, the isolation gate, route
settings (group, deadline, crash_limit), crash markers in the store."""

from __future__ import annotations

import dataclasses
import os
import select
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from integration_bus.cli import cli
from integration_bus.connector import Envelope
from integration_bus.errors import CircuitOpen, ConfigError, SinkDeadlineExceeded
from integration_bus.isolation import IsolationGate, died, owner_identity
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from integration_bus.sinkcalls import MEANWHILE_SLICE, SinkCalls
from integration_bus.store import CrashMarker, Settlement, Store
from integration_bus.testing import wait_for
from tests.conftest import write_config


class GatedSink:
    """Hangs on envelopes whose payload says so, until ``release`` is set."""

    name = "gated"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.delivered: list[str] = []

    def deliver(self, envelope: Envelope) -> None:
        if envelope.payload.get("hang"):  # type: ignore[union-attr]
            self.release.wait(30)
        self.delivered.append(envelope.id)

    def close(self) -> None:
        self.release.set()


def envelope(**payload: object) -> Envelope:
    return Envelope.create("order.created", dict(payload), source="test")


def test_a_call_past_its_deadline_fails_in_doubt_and_holds_the_sink_until_it_returns() -> None:
    sink, calls = GatedSink(), SinkCalls("orders")
    try:
        # Given a batch whose second envelope hangs in the sink
        first, hung, third = envelope(), envelope(hang=True), envelope()
        # When the lane waits with a deadline
        errors = calls.deliver(sink, [first, hung, third], deadline=0.2)
        # Then the first is delivered, the hung one and the unsent one fail as in doubt
        assert errors[0] is None
        assert all(isinstance(e, SinkDeadlineExceeded) for e in errors[1:])
        assert sink.delivered == [first.id]
        # ... and while the abandoned call still hangs, the sink is held (no attempt counted)
        (held,) = calls.deliver(sink, [envelope()], deadline=0.2)
        assert isinstance(held, CircuitOpen)
        # ... until it returns: then calls go through again
        sink.release.set()
        later = envelope()
        for _ in range(100):
            (outcome,) = calls.deliver(sink, [later], deadline=5)
            if outcome is None:
                break
            threading.Event().wait(0.05)
        assert later.id in sink.delivered
        assert third.id not in sink.delivered  # cancelled: never sent after the deadline
    finally:
        calls.close()


def test_quick_calls_are_not_cut_by_a_deadline_shorter_than_the_batch() -> None:
    sink, calls = GatedSink(), SinkCalls("orders")
    batch = [envelope() for _ in range(200)]
    try:
        # the deadline restarts with each finished call
        assert calls.deliver(sink, batch, deadline=1.0) == [None] * 200
    finally:
        calls.close()


def test_the_waiting_thread_works_meanwhile_and_the_deadline_still_holds() -> None:
    # Given work for the waiting thread that never runs out (the lane reading ahead)
    slices: list[tuple[threading.Thread, float]] = []

    def meanwhile(wait: float) -> bool:
        slices.append((threading.current_thread(), wait))
        threading.Event().wait(wait)
        return True

    sink, calls = GatedSink(), SinkCalls("orders", meanwhile=meanwhile)
    try:
        # When a call hangs past its deadline
        (error,) = calls.deliver(sink, [envelope(hang=True)], deadline=0.2)
        # Then it still fails as in doubt, and the work ran on the waiting thread, in slices
        assert isinstance(error, SinkDeadlineExceeded)
        assert slices
        assert {thread for thread, _ in slices} == {threading.current_thread()}
        assert max(wait for _, wait in slices) <= MEANWHILE_SLICE
    finally:
        sink.release.set()
        calls.close()


def test_meanwhile_work_stops_once_it_has_nothing_left() -> None:
    asked: list[float] = []

    def meanwhile(wait: float) -> bool:
        asked.append(wait)
        return False  # nothing to read ahead

    sink, calls = GatedSink(), SinkCalls("orders", meanwhile=meanwhile)
    timer = threading.Timer(0.2, sink.release.set)
    try:
        timer.start()
        slow = envelope(hang=True)
        assert calls.deliver(sink, [slow], deadline=5) == [None]
        assert sink.delivered == [slow.id]
        assert len(asked) == 1  # then only waiting, not polling
    finally:
        timer.cancel()
        calls.close()


def test_a_call_that_ends_wakes_a_meanwhile_waiting_on_its_descriptor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given work for the waiting thread that waits on descriptors, in slices far longer than
    # the test is willing to wait (as the lane waits on its sockets for the next deliveries)
    monkeypatch.setattr("integration_bus.sinkcalls.MEANWHILE_SLICE", 60.0)
    slices: list[float] = []

    def meanwhile(wait: float) -> bool:
        slices.append(wait)
        watch = select.poll()
        watch.register(calls.wake_fd, select.POLLIN)
        watch.poll(wait * 1000)
        return True

    sink, calls = GatedSink(), SinkCalls("orders", meanwhile=meanwhile)
    slow, results = envelope(hang=True), []
    caller = threading.Thread(target=lambda: results.append(
        calls.deliver(sink, [slow], deadline=120)))
    try:
        caller.start()
        wait_for(lambda: slices, message="the waiting thread waiting on its descriptors")
        # When the call ends
        sink.release.set()
        # Then the waiting thread sees it at once, not at the end of its minute-long slice
        caller.join(timeout=10)
        assert not caller.is_alive(), "the end of the call did not wake the waiting thread"
        assert results == [[None]]
        assert slices[0] == 60.0
        # ... and a call made later does not wake it early with what the first one wrote
        sink.release.clear()
        results.clear()
        del slices[:]
        later = threading.Thread(target=lambda: results.append(
            calls.deliver(sink, [envelope(hang=True)], deadline=120)))
        later.start()
        wait_for(lambda: slices, message="waiting on the second call")
        assert later.is_alive() and not results  # still waiting, woken by nothing stale
        sink.release.set()
        later.join(timeout=10)
        assert results == [[None]] and len(slices) == 1
    finally:
        sink.release.set()
        calls.close()


def test_the_gate_runs_a_suspect_alone() -> None:
    gate = IsolationGate(patience=5)
    inside = threading.Event()
    leave = threading.Event()
    order: list[str] = []

    def reader() -> None:
        with gate.shared():
            inside.set()
            leave.wait(5)
            order.append("reader done")

    thread = threading.Thread(target=reader)
    thread.start()
    inside.wait(5)
    threading.Timer(0.1, leave.set).start()
    with gate.exclusive():
        order.append("suspect")
    thread.join()
    assert order == ["reader done", "suspect"]


def test_crash_markers_name_what_a_dead_worker_was_executing(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'bus.db'}")
    try:
        me, dead_owner = owner_identity(), "nohost.invalid:1:x"
        # Given a batch marked by a worker that died, and one of ours
        store.mark_executing("b:1", [("orders", "E1"), ("orders", "E2")], dead_owner)
        store.mark_executing("b:2", [("orders", "E3")], me)
        keys = [("orders", "E1"), ("orders", "E2"), ("orders", "E3"), ("orders", "E4")]
        found = store.crash_markers(keys, me)
        # Then only the other owner's marks are found
        assert set(found) == {("orders", "E1"), ("orders", "E2")}
        assert found["orders", "E1"].crashes == 0 and found["orders", "E1"].row == "b:1"
        # When E1 is taken over to run alone, it gets a row of its own with its crash count
        row = store.take_over_marker(found["orders", "E1"], me, 1, [{"attempt": 1}])
        again = store.crash_markers(keys, "someone-else")
        assert again["orders", "E1"].crashes == 1 and again["orders", "E1"].row == row
        assert again["orders", "E2"].row == "b:1"  # the dead batch still names E2
        # ... and settling removes exactly what it names
        store.settle(Settlement(unmark=[(row, None), ("b:1", ("orders", "E2")),
                                        ("b:2", None)]))
        assert store.crash_markers(keys, "someone-else") == {}
    finally:
        store.close()


def test_whose_marks_count_as_crashes(tmp_path: Path) -> None:
    me = owner_identity()
    host = me.partition(":")[0]
    mark = CrashMarker("orders", "E1", "b:1", me, 0, datetime.now(UTC))
    assert not died(mark, me)  # ours: a dropped connection, no crash
    live = dataclasses.replace(mark, owner=f"{host}:{os.getppid()}:x")
    assert not died(live, me)  # a live process on this host: a competing worker
    assert died(mark, owner_identity())  # our pid, another incarnation (a container's pid 1)
    assert died(dataclasses.replace(mark, owner="nohost.invalid:1:x"), me)  # another host
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert died(dataclasses.replace(mark, owner=f"{host}:{gone}:x"), me)  # pid gone


@pytest.mark.parametrize(("extra", "problem"), [
    ("crash_limit: 10", "crash_limit (10) must be below delivery_limit (10)"),
    ("deadline: 0s", "deadline"),
    ("group: 'a b'", "group"),
])
def test_bad_bulkhead_settings_fail_at_load(tmp_path: Path, extra: str, problem: str) -> None:
    config_dir = write_config(tmp_path, f"""
        sinks: {{out: {{connector: jsonl, path: var/out.jsonl}}}}
        routes:
          orders:
            from: [order.created]
            to: [out]
            {extra}
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir, Registry.from_entry_points(), {})
    assert problem in str(caught.value) and "bus.yaml" in str(caught.value)


def test_default_crash_limit_stays_below_a_low_delivery_limit(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, """
        sinks: {out: {connector: jsonl, path: var/out.jsonl}}
        routes:
          orders: {from: [order.created], to: [out], delivery_limit: 2}
          stock: {from: [stock.changed], to: [out], group: erp, deadline: 5s}
        """)
    routes = load_config(config_dir, Registry.from_entry_points(), {}).settings.routes
    assert routes["orders"].effective_crash_limit == 1
    assert routes["stock"].effective_crash_limit == 3
    assert routes["stock"].deadline == 5000 and routes["stock"].group == "erp"


def test_supervise_does_not_restart_a_worker_that_exits_by_itself(tmp_path: Path) -> None:
    # Given a configuration the worker refuses at start (exit 2)
    config_dir = write_config(tmp_path, """
        sinks: {out: {connector: jsonl, path: var/out.jsonl}}
        routes:
          orders: {from: [order.created], to: [out], crash_limit: 10}
        """)
    # When it runs supervised
    result = CliRunner().invoke(cli, ["worker", "--supervise", "--config-dir", str(config_dir)])
    # Then the supervisor passes the exit code on instead of restarting a configuration error
    assert result.exit_code == 2, result.output


class HangingLookupSink(GatedSink):
    """A LookupSink whose lookup hangs until ``release``."""

    def lookup(self, envelope: Envelope) -> bool:
        self.release.wait(30)
        return envelope.id in self.delivered


def test_a_lookup_past_its_deadline_fails_in_doubt() -> None:
    sink, calls = HangingLookupSink(), SinkCalls("orders")
    try:
        with pytest.raises(SinkDeadlineExceeded, match="lookup at sink gated"):
            calls.lookup(sink, envelope(), deadline=0.2)
        with pytest.raises(CircuitOpen):  # the sink is held while the lookup still hangs
            calls.lookup(sink, envelope(), deadline=0.2)
    finally:
        sink.release.set()
        calls.close()


def test_routes_of_a_group_share_a_lane_and_sinks_others_get_their_own(tmp_path: Path) -> None:
    # Given three routes to one sink, two of them in group "erp" (embedded mode: no broker)
    config_dir = write_config(tmp_path, """
        store: {url: sqlite:///var/bus.db}
        sinks: {out: {connector: jsonl, path: var/out.jsonl}}
        routes:
          orders: {from: [order.created], to: [out]}
          stock: {from: [stock.changed], to: [out], group: erp}
          prices: {from: [price.changed], to: [out], group: erp}
        """)
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        worker = bus.worker()
        # Then the worker has one lane per group, and a sink instance per lane
        lanes = {lane.name: lane for lane in worker.lanes}
        assert set(lanes) == {"orders", "erp"}
        erp = {route.name: route for route in lanes["erp"].routes.values()}
        assert set(erp) == {"stock", "prices"}
        assert erp["stock"].sinks[0] is erp["prices"].sinks[0]
        orders = next(iter(lanes["orders"].routes.values()))
        assert orders.sinks[0] is not erp["stock"].sinks[0]
        for route in worker.routes.values():
            route.sinks[0].close()
