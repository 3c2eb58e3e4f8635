"""The worker: route queues behind bulkheads, each lane consumed and settled on its own.

Routes are grouped into lanes (a route's ``group``, or the route alone); each lane runs in its
own thread with its own consumer, prefetch, batch loop, sinks and sink deadlines (``lane``), so
a slow, hung or failing sink holds only its own lane. Broker dead letters are archived by a lane
of their own. Lanes share the store, the state below, and an :class:`IsolationGate` under which
a message a dead worker left executing runs alone (``isolation``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import structlog

from integration_bus.backoff import Backoff
from integration_bus.batch import Batch
from integration_bus.errors import StoreUnavailable
from integration_bus.isolation import IsolationGate, owner_identity
from integration_bus.lane import Lane, LaneContext
from integration_bus.metrics import Metrics
from integration_bus.route import Route
from integration_bus.store import Store
from integration_bus.threads import join_all
from integration_bus.topology import DEAD_LETTER_QUEUE, Topology
from integration_bus.tracing import Tracing
from integration_bus.transport import Transport

__all__ = ["Worker", "WorkerOptions", "WorkerState"]

log = structlog.get_logger("integration_bus.worker")

#: restarting a crashed lane or bus thread: 1 s, doubling up to 30 s
RESTART_BACKOFF = Backoff(first=1.0, cap=30.0)


@dataclass(frozen=True)
class WorkerOptions:
    batch_size: int = 100
    prefetch: int = 200  # per lane
    claim_lease: timedelta = timedelta(minutes=5)
    store_probe_interval: float = 1.0
    reconnect_max_delay: float = 10.0
    fetch_timeout: float = 0.25
    archive_dead_letters: bool = True
    drain_timeout: float = 10.0  # graceful stop: reading late deliveries ends by then
    #: PostgreSQL: a batch's settlement commits while the lane runs the next one, and the
    #: batch is acked once it has (integration_bus/store/behind.py)
    settle_behind: bool = True


@dataclass
class WorkerState:
    """What the worker is doing, for status, tests and metrics (shared by its lanes)."""

    paused: bool = False
    connected: bool = False
    batches: int = 0
    handled: int = 0
    last_error: str | None = None
    events: list[str] = field(default_factory=list)
    metrics: Metrics | None = None
    _paused_lanes: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pause(self, lane: str, exc: StoreUnavailable) -> None:
        """A lane cannot reach the store: the worker counts as paused until every lane can."""
        with self._lock:
            self.last_error = str(exc)
            if lane in self._paused_lanes:
                return
            self._paused_lanes.add(lane)
            if self.paused:
                return
            self.paused = True
            self.events = [*self.events[-99:], "paused"]
        if self.metrics is not None:
            self.metrics.worker_paused.set(1)
        log.warning("worker.paused", reason=str(exc),
                    hint="holding unacked messages until the store answers")

    def resume(self, lane: str) -> None:
        if lane not in self._paused_lanes:  # the hot path: no lock
            return
        with self._lock:
            self._paused_lanes.discard(lane)
            if self._paused_lanes or not self.paused:
                return
            self.paused = False
            self.events = [*self.events[-99:], "resumed"]
        if self.metrics is not None:
            self.metrics.worker_paused.set(0)
        log.info("worker.resumed")


class Worker:
    """Consumes the queues of ``routes`` (plus ``bus.dead-letters`` when archiving) until
    ``stop`` is set, one lane (thread) per route group. Build one per process or thread;
    ``gate`` may be shared by the workers of one process. ``on_batch`` is called from the lane
    threads (concurrently when there are several lanes)."""

    def __init__(self, transport: Transport, store: Store, routes: Sequence[Route],
                 topology: Topology, *, metrics: Metrics | None = None,
                 options: WorkerOptions | None = None,
                 on_batch: Callable[[Batch], None] | None = None,
                 gate: IsolationGate | None = None, tracing: Tracing | None = None) -> None:
        self.transport = transport
        #: None unless tracing is on: the batch loop then skips every tracing call
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.store = store
        self.routes = {route.queue: route for route in routes}
        self.topology = topology
        self.metrics = metrics or Metrics()
        self.options = options or WorkerOptions()
        self.state = WorkerState(metrics=self.metrics)
        self.owner = owner_identity()
        self._ctx = LaneContext(transport, store, topology, metrics=self.metrics,
                                options=self.options, state=self.state,
                                gate=gate or IsolationGate(), owner=self.owner,
                                on_batch=on_batch, tracing=self.tracing)
        self.lanes = self._lanes()

    def _lanes(self) -> list[Lane]:
        groups: dict[str, dict[str, Route]] = {}
        for queue, route in self.routes.items():
            groups.setdefault(route.lane, {})[queue] = route
        lanes = [Lane(name, routes, list(routes), self._ctx) for name, routes in groups.items()]
        if self.options.archive_dead_letters and not self.transport.embedded:
            lanes.append(Lane("dead-letters", {}, [DEAD_LETTER_QUEUE], self._ctx))
        return lanes

    def run(self, stop: threading.Event) -> None:
        """Run every lane until ``stop`` is set; each then finishes its in-flight messages."""
        if len(self.lanes) == 1:
            self.lanes[0].run(stop)
        else:
            threads = [threading.Thread(target=self._run_lane, args=(lane, stop),
                                        name=f"lane:{lane.name}", daemon=True)
                       for lane in self.lanes]
            for thread in threads:
                thread.start()
            join_all(threads)  # in slices: the calling (main) thread still runs signal handlers
        self.state.connected = False
        closed: set[int] = set()
        for route in self.routes.values():
            for sink in route.sinks:
                if id(sink) not in closed:
                    closed.add(id(sink))
                    sink.close()

    @staticmethod
    def _run_lane(lane: Lane, stop: threading.Event) -> None:
        restarts = RESTART_BACKOFF.start()
        while True:
            try:
                lane.run(stop)
                return
            except Exception:  # a bug outside the lane's own guard: restart it, never lose it
                delay = restarts.failed()
                log.exception("worker.lane_crashed", lane=lane.name, restart_in=delay)
                if stop.wait(delay):
                    return
