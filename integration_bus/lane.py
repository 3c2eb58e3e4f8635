"""One bulkhead of the worker: a route (or route group) consumed and settled on its own.

A lane has its own consumer (its own broker connection and prefetch), publisher, batch loop,
sink instances and sink-call threads (``sinkcalls``), so a slow, hung or failing sink holds
only its lane. A batch goes through these steps (``docs/lifecycle.md`` has the full picture):

1. mark the envelopes as executing (crash markers, see ``isolation``); messages a dead worker
   left marked are set aside and run one at a time, alone in the process;
2. decode envelopes, run each route's pipeline (pure: can be redone after a pause);
3. claim every (sink, idempotency key) in the ledger — one transaction;
4. deliver: claimed → sink (within the route's deadline); done → duplicate; in doubt (our own
   claim, redelivered after a crash) → ask a LookupSink first; busy → retry later; then each
   message's fate (deliver / retry / hold / dead-letter) from ``integration_bus.fate``. While
   a sink call waits, the lane reads the next batch's deliveries into its consumer's buffer,
   and once it holds a whole batch of fresh ones, marks that batch and runs step 2 for it
   (``_prepare_ahead``);
5. settle — journal, ledger outcomes, dead letters, crash markers — in one transaction;
6. hand failed-but-retryable envelopes to a retry tier (publisher-confirmed);
7. ack the whole fetch.

A crash anywhere before 7 leaves the messages unacked: the broker redelivers them and the
ledger keeps effects single. While the store is unreachable the lane holds its batch and stops
taking messages (no requeue loop burns delivery counts) until a ping succeeds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import structlog

from integration_bus.backoff import Backoff
from integration_bus.batch import Batch
from integration_bus.envelope import new_id
from integration_bus.errors import BrokerUnavailable, CrashedWorker, StoreUnavailable
from integration_bus.fate import Hold, Retry, crashed_out
from integration_bus.isolation import IsolationGate, crash_entry, died
from integration_bus.metrics import ulid_seconds
from integration_bus.route import Route
from integration_bus.sinkcalls import SinkCalls
from integration_bus.store import Claim, ClaimOutcome, CrashMarker, Settlement, Store
from integration_bus.store.behind import SettleBehind, SettleFailed, eligible
from integration_bus.store.markers import Unmark
from integration_bus.topology import DEAD_LETTER_QUEUE, Topology, route_queue
from integration_bus.tracing import Tracing
from integration_bus.transport import Consumer, Delivery, Transport, TransportPublisher
from integration_bus.transport.traced import TracedPublisher

__all__ = ["Lane", "LaneContext"]

log = structlog.get_logger("integration_bus.worker")

#: how long a lane whose broker connection is gone waits for its settlement in flight to end
ABANDON_WAIT = 10.0


class LaneContext:
    """What the lanes of one worker share: store, topology, options, state, gate, identity."""

    def __init__(self, transport: Transport, store: Store, topology: Topology, *,
                 metrics: Any, options: Any, state: Any, gate: IsolationGate, owner: str,
                 on_batch: Callable[[Batch], None] | None,
                 tracing: Tracing | None = None) -> None:
        self.transport, self.store, self.topology = transport, store, topology
        self.tracing = tracing  # None unless tracing is on
        self.metrics, self.options, self.state = metrics, options, state
        self.gate, self.owner, self.on_batch = gate, owner, on_batch
        #: crash markers cost a write per batch; embedded mode needs them as much as RabbitMQ
        #: (its store-backed queue gives a dead process's messages back, and has no delivery
        #: limit: without them a message that kills ``bus run`` would come back forever)
        self.markers = True


class Lane:
    """Consumes ``queues`` until ``stop`` is set. Thread-confined: one thread runs it."""

    def __init__(self, name: str, routes: Mapping[str, Route], queues: list[str],
                 ctx: LaneContext) -> None:
        self.name = name
        self.routes = dict(routes)  # queue -> route
        self.queues = queues
        self.ctx = ctx
        self.calls = SinkCalls(name, meanwhile=self._read_ahead)
        self._consumer: Consumer | None = None
        self._publisher: TransportPublisher | None = None
        self._cautious = True  # prefetch 1 until a fresh (not redelivered) message shows up
        self._paused: dict[str, float] = {}  # queue -> monotonic time to resume (open circuits)
        #: the next batch, taken from the read-ahead buffer and marked executing (its crash
        #: marker row) in the settlement of the batch before (see _premark)
        self._next: tuple[list[Delivery], str | None] | None = None
        #: the gate held shared from a batch's settlement that marked the next batch until
        #: that batch has run (see _handle)
        self._gate_held: ExitStack | None = None
        #: PostgreSQL: settlements committed while the next batch runs (store/behind.py)
        self._behind = _settle_behind(ctx)
        #: the batch whose settlement is in flight there, acked once it commits
        self._settling: tuple[list[Delivery], Batch] | None = None
        self._settle_failed: SettleFailed | None = None  # seen while a sink call waited
        self._taking = False  # within _handle: a batch's flow gauge stands for it
        #: a sink call of a batch that may chain the next is under way (see _prepare_ahead)
        self._may_prepare = False
        #: the next batch (``_next``), marked and decoded with its pipelines run while the
        #: sink call of the batch before waited: its delivery tags, paused queues then, batch
        self._prepared: tuple[list[int], frozenset[str], Batch] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; then finish in-flight messages, ack, and return."""
        options = self.ctx.options
        reconnect = Backoff(first=0.5, cap=options.reconnect_max_delay).start()
        while not stop.is_set():
            try:
                self._connect()
                reconnect.reset()
                self._resume_due()
                if self._handle_next(stop):
                    continue
                # A batch still settling: take what is already here, else wait for its commit.
                wait = 0.0 if self._settling is not None else options.fetch_timeout
                deliveries = self._consumer.fetch(  # type: ignore[union-attr]
                    1 if self._cautious else options.batch_size, wait)
                if deliveries:
                    self._handle(deliveries, stop)
                else:
                    self._settled(stop)
            except BrokerUnavailable as exc:
                self._disconnect(f"broker unavailable: {exc}")
                reconnect.wait(stop)
            except Exception as exc:  # a bug in the bus itself, not in a sink or pipeline
                # Drop the connection so the batch is redelivered (its delivery count rises,
                # and a message that triggers this every time ends as a delivery_limit dead
                # letter instead of wedging the lane).
                log.exception("worker.crashed", lane=self.name,
                              error=f"{type(exc).__name__}: {exc}")
                self._disconnect(f"{type(exc).__name__}: {exc}")
                reconnect.wait(stop)
        self._finish(stop)

    def _connect(self) -> None:
        if self._consumer is not None:
            return
        transport = self.ctx.transport
        self._publisher = transport.publisher()
        if self.ctx.tracing is not None:
            self._publisher = TracedPublisher(self._publisher, self.ctx.tracing)
        self._cautious = not transport.embedded
        prefetch = 1 if self._cautious else self.ctx.options.prefetch
        self._consumer = transport.consumer(self.queues, prefetch)
        self.ctx.state.connected = True
        log.info("worker.consuming", lane=self.name, queues=self.queues)

    def _disconnect(self, reason: str | None = None) -> None:
        if reason:
            self.ctx.state.last_error = reason
            log.warning("worker.disconnected", lane=self.name, reason=reason)
        self._abandon_settling()
        for part in (self._consumer, self._publisher):
            if part is not None:
                part.close()
        self._consumer = self._publisher = None
        following, self._next = self._next, None  # its deliveries go back with the connection
        self._drop_prepared()
        if following is not None and following[1] is not None:
            self._unmark_quietly(following[1])  # marked ahead, never run
        self._release_gate()
        self.ctx.metrics.flow.settled(id(self))  # unacked: back in the broker's hands
        self._paused.clear()  # a new connection consumes every queue; holds start over

    def _finish(self, stop: threading.Event) -> None:
        # Deliveries already buffered or under way are handled rather than returned (returning
        # them would count against their delivery limit): stop_consuming takes in what the
        # queue assigned to this consumer before cancelling, and a delivery that still comes
        # after the cancel is read here, until the connection stays quiet (within a deadline).
        if self._consumer is not None:
            try:
                self._settled(stop)
                self._handle_next(stop)  # marked already: handled first
                self._consumer.stop_consuming()
                deadline = time.monotonic() + self.ctx.options.drain_timeout
                while True:
                    if self._handle_next(stop):
                        continue
                    # Everything buffered is handled however long it takes; the deadline only
                    # bounds waiting for deliveries still on their way.
                    wait = 0.3 if time.monotonic() < deadline else 0.0
                    rest = self._consumer.fetch(self.ctx.options.batch_size, wait)
                    if not rest:
                        break
                    self._handle(rest, stop)
                self._settled(stop)
            except BrokerUnavailable:
                pass
        self._disconnect()
        self.calls.close()
        if self._behind is not None:
            self._behind.close()

    # -- one fetch -------------------------------------------------------------------------------
    def _handle_next(self, stop: threading.Event) -> bool:
        """Handle the batch the last settlement took in (see :meth:`_premark`), if any."""
        if self._next is None:
            return False
        deliveries, row = self._next
        self._next = None
        self._handle(deliveries, stop, marked=row)
        return True

    def _handle(self, deliveries: list[Delivery], stop: threading.Event,
                marked: str | None = None) -> None:
        """Run, settle and ack one fetch. ``marked``: the deliveries' crash marker row, written
        with the batch before (all of them routed and never delivered before: no suspects)."""
        if self._cautious and any(not d.redelivered for d in deliveries):
            # Past the redelivered backlog of a crash: back to the full prefetch. (Until now
            # only one message at a time was out, so a message that kills the process holds
            # only itself and the one message in flight on each other lane.)
            self._cautious = False
            self._consumer.set_prefetch(self.ctx.options.prefetch)  # type: ignore[union-attr]
        archived = [d for d in deliveries if d.queue == DEAD_LETTER_QUEUE]
        routed = [d for d in deliveries if d.queue != DEAD_LETTER_QUEUE]
        # held from here until the ack (bus_oldest_unsettled_seconds), store outages included
        self.ctx.metrics.flow.taken(id(self), _oldest_per_route(routed, self.routes))
        self._taking = True
        try:
            self._take(deliveries, routed, archived, stop, marked)
        finally:
            self._taking = False

    def _take(self, deliveries: list[Delivery], routed: list[Delivery],
              archived: list[Delivery], stop: threading.Event, marked: str | None) -> None:
        suspects = self._suspects(routed, stop) if self.ctx.markers and routed else {}
        normal = [d for d in routed if d.tag not in suspects]
        if suspects:
            self._settled(stop)  # nothing of this lane left settling while a suspect runs
        if normal or archived:
            self._hold_gate()
            try:
                # the next batch is marked with this one's settlement only when nothing runs
                # between the two (a suspect runs alone, after: its crash must not name them)
                behind = self._run(normal, stop, archived=archived, marker_row=marked,
                                   chain=not suspects, behind=not suspects and not archived)
            except BaseException:
                self._release_gate()
                raise
            if self._next is None or self._next[1] is None:
                # Nothing stands marked ahead: a suspect of another lane may run alone now.
                # A batch marked ahead runs first, still under the gate, so that no suspect
                # runs alone while it stands marked (the suspect's crash would name it).
                self._release_gate()
            if behind:
                return  # acked once its settlement commits (_settled)
        for delivery in routed:
            if delivery.tag in suspects:
                self._run_suspect(delivery, suspects[delivery.tag], stop)
        self._consumer.ack(deliveries)  # type: ignore[union-attr]
        self.ctx.metrics.flow.settled(id(self))
        self.ctx.state.batches += 1
        self.ctx.state.handled += len(deliveries)

    def _run(self, deliveries: list[Delivery], stop: threading.Event, *,
             archived: list[Delivery] | None = None,
             crashed: tuple[int, CrashedWorker, CrashMarker, list[dict[str, Any]]] | None = None,
             marker_row: str | None = None, chain: bool = False, behind: bool = False) -> bool:
        """Execute and settle ``deliveries`` (not ack). They are marked executing first (one
        marker row), unless ``marker_row`` (a suspect's own row, taken over, or the row the
        batch before wrote for them) already stands or the one delivery is ``crashed`` (tag,
        error, marker, history: dead-lettered unrun). ``chain``: the settlement may mark the
        next batch too (:meth:`_premark`). ``behind``: the settlement may be left committing
        while the lane goes on (store/behind.py); True when it was, and ``deliveries`` are
        then acked by :meth:`_settled`, not by the caller."""
        ctx = self.ctx
        unmark: list[Unmark] = []
        if ctx.markers and crashed is not None:
            _tag, _error, marker, _history = crashed
            unmark.append((marker.row, (marker.route, marker.envelope_id)))
        elif ctx.markers and marker_row is None and deliveries:
            keys = [(self.routes[d.queue].name, _envelope_id(d)) for d in deliveries]
            marker_row = f"b:{new_id()}"
            row = marker_row
            self._until_stored(lambda: ctx.store.mark_executing(row, keys, ctx.owner), stop)
        prepared = (self._take_prepared(deliveries)
                    if marker_row is not None and not archived and crashed is None else None)
        batch = prepared if prepared is not None else self._build(
            deliveries, archived or [],
            {crashed[0]: (crashed[1], crashed[3])} if crashed else None)
        try:
            store = (ctx.store if self._behind is None
                     else cast(Store, _SettledFirst(self, ctx.store, stop)))
            # the next batch may be taken, marked and built while this one's sink call waits
            self._may_prepare = chain and ctx.markers and self._next is None
            try:
                self._until_stored(lambda: batch.claim_and_deliver(store), stop)
            finally:
                self._may_prepare = False
            if marker_row is not None:
                # A suspect handed back unrun (its route is held) keeps its row and crash count.
                suspect_held = not marker_row.startswith("b:") and any(
                    isinstance(item.fate, Hold) for item in batch.items)
                if not suspect_held:
                    unmark.append((marker_row, None))
            batch.settlement.unmark.extend(unmark)
            # the batch before: committed and acked before this one's settlement goes
            self._settled(stop)
            if behind and crashed is None and self._send_behind(batch, chain and ctx.markers):
                self._settling = deliveries, batch
                return True
            reuse = marker_row if marker_row and marker_row.startswith("b:") else None
            following = (self._premark(reuse) if chain and ctx.markers and self._behind is None
                         and self._next is None else None)
            if following is not None:
                batch.settlement.mark = following[1]
                # from here on the lane's: handled next, even if this settlement fails
                self._next = following[0], following[1][0] if following[1] else None
            self._until_stored(lambda: ctx.store.settle(batch.settlement), stop)
            if batch.archive:
                self._until_stored(lambda: ctx.store.settle(batch.archive), stop)
            self._retry(batch)
        except BaseException:
            batch.end_spans()
            raise
        batch.end_spans()
        for route, hold_ms in batch.holds().items():
            self._hold(route, hold_ms)
        batch.count_settled()
        if ctx.on_batch is not None:
            ctx.on_batch(batch)
        return False

    # -- settling behind (PostgreSQL, store/behind.py) -------------------------------------------
    def _send_behind(self, batch: Batch, chain: bool) -> bool:
        """Send the settlement of ``batch`` to commit while the lane goes on, when it is one
        the statement can write and nothing has to follow it before the ack (retries, holds,
        archived dead letters); False: settle it inline. ``chain``: the next batch, when the
        read-ahead buffer holds it, is marked by a statement sent first (:meth:`_premark`),
        whose commit alone is waited for."""
        if (self._behind is None or batch.archive or not eligible(batch.settlement)
                or any(isinstance(item.fate, Retry | Hold) for item in batch.items)):
            return False
        following = self._premark(None) if chain and self._next is None else None
        mark = following[1] if following is not None else None
        try:
            self._behind.send(batch.settlement, mark=mark)
        except StoreUnavailable:
            if following is not None:  # taken from the buffer: handled next, marked then
                self._next = following[0], None
            return False  # written inline, which waits for the store
        if following is not None:
            self._next = following[0], mark[0] if mark is not None else None
            try:
                self._behind.marked()
            except StoreUnavailable as exc:
                log.warning("worker.mark_failed", lane=self.name, error=str(exc),
                            hint="the next batch is marked on its own before it runs")
                self._next = following[0], None
        return True

    def _settled(self, stop: threading.Event) -> None:
        """Wait for the settlement in flight, if any, then ack its batch. One that did not
        commit (or may not have) is written again inline."""
        if self._settling is None:
            return
        assert self._behind is not None
        failed = self._settle_failed
        while failed is None:
            try:
                if self._behind.done(0.5):
                    break
            except SettleFailed as exc:
                failed = exc
                break
        self._settle_failed = None
        if failed is not None:
            _deliveries, batch = self._settling
            log.warning("worker.settle_again", lane=self.name, error=str(failed),
                        hint="writing the batch's settlement again inline")
            self._until_stored(lambda: self.ctx.store.settle(batch.settlement), stop)
        self._ack_settled()

    def _poll_settled(self) -> None:
        """:meth:`_settled` without waiting, while a sink call waits: the sooner a settled
        batch is acked, the sooner the broker sends the lane more. Never raises."""
        if self._settling is None or self._settle_failed is not None:
            return
        assert self._behind is not None
        try:
            if not self._behind.done(0.0):
                return
        except SettleFailed as exc:
            self._settle_failed = exc  # written again by the next _settled
            return
        try:
            self._ack_settled()
        except BrokerUnavailable:
            pass  # the connection is broken: the next fetch or ack says so

    def _ack_settled(self) -> None:
        settling, self._settling = self._settling, None
        assert settling is not None
        deliveries, batch = settling
        batch.end_spans()
        batch.count_settled()
        if self.ctx.on_batch is not None:
            self.ctx.on_batch(batch)
        self.ctx.state.batches += 1
        self.ctx.state.handled += len(deliveries)
        if not self._taking:
            self.ctx.metrics.flow.settled(id(self))
        self._consumer.ack(deliveries)  # type: ignore[union-attr]

    def _abandon_settling(self) -> None:
        """The connection is gone: the batch settling is redelivered whatever its settlement
        does (the ledger keeps its effects single); wait for that settlement's end."""
        settling, self._settling = self._settling, None
        self._settle_failed = None
        if settling is None or self._behind is None:
            return
        deadline = time.monotonic() + ABANDON_WAIT
        try:
            while not self._behind.done(0.5):
                if time.monotonic() > deadline:
                    self._behind.close()  # a new connection for the next settlement
                    return
        except SettleFailed as exc:
            log.warning("worker.settle_lost", lane=self.name, error=str(exc),
                        hint="its messages come back from the broker and settle again")
        except Exception as exc:  # a bug: start over on a new connection
            log.exception("worker.settle_lost", lane=self.name,
                          error=f"{type(exc).__name__}: {exc}")
            self._behind.close()

    def _hold_gate(self) -> None:
        if self._gate_held is None:
            held = ExitStack()
            held.enter_context(self.ctx.gate.shared())
            self._gate_held = held

    def _release_gate(self) -> None:
        held, self._gate_held = self._gate_held, None
        if held is not None:
            held.close()

    def _unmark_quietly(self, row: str) -> None:
        """Remove the marker row of a batch marked ahead that will not run here (its
        connection is gone: the broker redelivers it). Left to the retention purge if the
        store cannot be reached."""
        try:
            self.ctx.store.settle(Settlement(unmark=[(row, None)]))
        except Exception as exc:
            log.warning("worker.mark_left", lane=self.name, row=row,
                        error=f"{type(exc).__name__}: {exc}",
                        hint="the retention purge removes it (bus scheduler)")

    def _read_ahead(self, wait: float) -> bool:
        """While a sink call waits (a republish for its confirms), read the next batch's
        deliveries off the socket: the broker sent them when the last batch was acked. They
        are buffered; the next fetch hands them out, unless the buffer holds a whole batch
        while the call still waits: then that batch starts here (:meth:`_prepare_ahead`).
        Waits up to ``wait`` s for deliveries, less when the call ends or the settlement in
        flight answers (their descriptors wake it): a settled batch is acked at once."""
        self._poll_settled()
        consumer = self._consumer
        if consumer is None or self._cautious:
            return False
        # the wait ends at once when the call ends or the settlement in flight answers
        wake = [self.calls.wake_fd]
        if self._settling is not None and self._settle_failed is None:
            settling = self._behind.fileno()  # type: ignore[union-attr]
            if settling is not None:
                wake.append(settling)
        more = consumer.read_ahead(self.ctx.options.batch_size, wait, wake)
        if not more and self._may_prepare:
            self._may_prepare = False  # once per sink call
            self._prepare_ahead()
        return more

    def _prepare_ahead(self) -> None:
        """While a sink call waits and the read-ahead buffer holds a whole batch: take it as
        the next batch (``_next``), mark it executing (its own transaction, off the batch's
        path) and run step 2 for it, so that it goes straight to its claims once this batch is
        settled. Marked first, as every batch is before its pipelines run: a crash from here
        on names it. Deliveries that cannot run so (redelivered, archived) are handed on
        unmarked. Never raises: at worst the next batch is marked and built on its own."""
        following = self._premark(None)
        if following is None:
            return
        deliveries, mark = following
        self._next = deliveries, None
        if mark is None:
            return
        row, keys, owner = mark
        try:
            # on the lane's own connection when it is idle (PostgreSQL), else through the pool
            if self._behind is None or not self._behind.mark(row, keys, owner):
                self.ctx.store.mark_executing(row, keys, owner)
        except Exception as exc:  # StoreUnavailable: marked on its own once it is its turn
            log.info("worker.mark_failed", lane=self.name, error=f"{type(exc).__name__}: {exc}",
                     hint="the next batch is marked on its own before it runs")
            return
        self._next = deliveries, row
        try:
            batch = self._build(deliveries, [])
        except Exception as exc:  # a bug: built again in its turn, where it is reported
            log.info("worker.prepare_failed", lane=self.name,
                     error=f"{type(exc).__name__}: {exc}")
            return
        self._prepared = [d.tag for d in deliveries], frozenset(self._paused), batch

    def _build(self, deliveries: list[Delivery], archived: list[Delivery],
               crashed: Mapping[int, tuple[CrashedWorker, list[dict[str, Any]]]] | None = None
               ) -> Batch:
        """Step 2 for ``deliveries``: decoded, pipelines run; items of a paused route held
        for what is left of its pause."""
        ctx, now = self.ctx, time.monotonic()
        held = {queue: max(1, int((at - now) * 1000)) for queue, at in self._paused.items()}
        return Batch.build(deliveries, self.routes, archived=archived,
                           claim_lease=ctx.options.claim_lease, metrics=ctx.metrics, held=held,
                           calls=self.calls, crashed=crashed, tracing=ctx.tracing)

    def _take_prepared(self, deliveries: list[Delivery]) -> Batch | None:
        """The batch :meth:`_prepare_ahead` built for ``deliveries``, unless a route was
        paused or resumed since (its held items would differ): then None, built again."""
        prepared, self._prepared = self._prepared, None
        if prepared is None:
            return None
        tags, paused, batch = prepared
        if tags == [d.tag for d in deliveries] and paused == frozenset(self._paused):
            return batch
        batch.end_spans()
        return None

    def _drop_prepared(self) -> None:
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared[2].end_spans()

    def _premark(self, row: str | None) -> \
            tuple[list[Delivery], tuple[str, list[tuple[str, str]], str] | None] | None:
        """The next batch, when the read-ahead buffer holds it already: its deliveries and,
        when they can run as they are (every one routed and fresh: no suspects to look up,
        nothing to archive), the crash marker to write with this batch's settlement (row,
        keys, owner), in ``row`` (the settled batch's own marker row) when given. That saves
        the marker's own transaction (docs/lifecycle.md, step 1). Deliveries that cannot run
        so are handled as if fetched, marked then."""
        consumer = self._consumer
        if consumer is None or self._cautious or self.ctx.gate.writer_waiting():
            return None  # a suspect waits to run alone: nothing may stand marked meanwhile
        size = self.ctx.options.batch_size
        consumer.read_ahead(size, 0.0)  # what the socket holds, without waiting; never raises
        deliveries = consumer.take_read(size)
        if not deliveries:
            return None
        if any(d.redelivered or d.queue not in self.routes for d in deliveries):
            return deliveries, None
        keys = [(self.routes[d.queue].name, _envelope_id(d)) for d in deliveries]
        return deliveries, (row or f"b:{new_id()}", keys, self.ctx.owner)

    # -- crash isolation -------------------------------------------------------------------------
    def _suspects(self, deliveries: list[Delivery],
                  stop: threading.Event) -> dict[int, CrashMarker]:
        """Redelivered messages a dead worker left marked: delivery tag -> its marker."""
        again = [d for d in deliveries if d.redelivered]
        if not again:
            return {}  # a message never delivered before cannot have been executing
        keys = {d.tag: (self.routes[d.queue].name, _envelope_id(d)) for d in again}
        found: dict[tuple[str, str], CrashMarker] = {}

        def look() -> None:
            found.update(self.ctx.store.crash_markers([k for k in keys.values() if k[1]],
                                                      self.ctx.owner))

        self._until_stored(look, stop)
        return {tag: found[key] for tag, key in keys.items()
                if key in found and died(found[key], self.ctx.owner)}

    def _run_suspect(self, delivery: Delivery, marker: CrashMarker,
                     stop: threading.Event) -> None:
        route = self.routes[delivery.queue]
        crashes = marker.crashes + 1
        history = [*marker.history, crash_entry(marker, crashes)]
        # The first crash names every message of the batch that was executing; from the second
        # on, the message ran alone: it is the likely cause.
        (log.warning if crashes > 1 else log.info)(
            "worker.crash_suspect", route=route.name, envelope_id=marker.envelope_id,
            crashes=crashes, crash_limit=route.crash_limit,
            hint="a worker died while handling it: it runs alone now")
        if crashed_out(crashes, route.crash_limit):
            error = CrashedWorker(f"the worker process died {crashes} time(s) while handling "
                                  f"this message (crash_limit {route.crash_limit})",
                                  crashes=crashes)
            with self.ctx.gate.shared():
                self._run([delivery], stop, crashed=(delivery.tag, error, marker, history))
            return
        with self.ctx.gate.exclusive(stop):
            rows: list[str] = []
            self._until_stored(lambda: rows.append(self.ctx.store.take_over_marker(
                marker, self.ctx.owner, crashes, history)), stop)
            self._run([delivery], stop, marker_row=rows[-1])

    # -- holds and retries -----------------------------------------------------------------------
    def _hold(self, route: str, hold_ms: int) -> None:
        """A sink of ``route`` has an open circuit: stop consuming the route for a while."""
        queue = route_queue(route)
        resume_at = time.monotonic() + hold_ms / 1000
        if self._paused.get(queue, 0) < resume_at:
            if queue not in self._paused:
                log.warning("route.paused", route=route, seconds=hold_ms / 1000,
                            reason="a sink's circuit breaker is open")
                self._consumer.pause(queue)  # type: ignore[union-attr]
            self._paused[queue] = resume_at

    def _resume_due(self) -> None:
        now = time.monotonic()
        for queue, resume_at in list(self._paused.items()):
            if resume_at <= now:
                if any(self.calls.busy(sink) for sink in self.routes[queue].sinks):
                    # a call past its deadline still hangs: taking messages now would only
                    # hand them back to wait again
                    self._paused[queue] = now + 0.5
                    continue
                del self._paused[queue]
                self._consumer.resume(queue)  # type: ignore[union-attr]
                log.info("route.resumed", queue=queue)

    def _retry(self, batch: Batch) -> None:
        for (route, delay_ms), envelopes in batch.retries().items():
            tier = self.ctx.topology.tier_for(delay_ms)
            outcomes = self._publisher.retry_later(route, envelopes, tier)  # type: ignore[union-attr]
            failed = next((o for o in outcomes if o is not None), None)
            if failed is not None:
                # Not acked: the broker redelivers the originals and the ledger keeps effects
                # single. Surface it as a connection problem so the lane reconnects.
                raise BrokerUnavailable(f"could not hand messages to the retry tier: {failed}")

    # -- store outages ---------------------------------------------------------------------------
    def _until_stored(self, action: Callable[[], Any], stop: threading.Event) -> None:
        """Run ``action``; while the store is unreachable, hold everything and wait for it."""
        state = self.ctx.state
        while True:
            try:
                action()
                state.resume(self.name)
                return
            except StoreUnavailable as exc:
                state.pause(self.name, exc)
                self._wait_for_store(stop)

    def _wait_for_store(self, stop: threading.Event) -> None:
        # Keep the broker connection alive (heartbeats) while waiting; never stop for `stop`
        # here: settling what was already delivered matters more than a quick exit.
        deadline = time.monotonic() + self.ctx.options.store_probe_interval
        while time.monotonic() < deadline:
            try:
                self._consumer.keepalive(  # type: ignore[union-attr]
                    max(0.0, deadline - time.monotonic()))
            except BrokerUnavailable:
                stop.wait(0.1)
        try:
            self.ctx.store.ping()
        except StoreUnavailable:
            pass


def _oldest_per_route(deliveries: list[Delivery],
                      routes: Mapping[str, Route]) -> dict[str, datetime]:
    """Per route, when the oldest envelope of ``deliveries`` was created, read from its id (a
    ULID) without decoding it; now for an id that is no ULID. No I/O.

    ULIDs sort as text (in either case) in the order they were made, so when the lowest id of
    a route is a ULID it is the oldest, and only it is read; otherwise (an id that is no ULID
    sorts first) every id of that route is."""
    ids: dict[str, list[str]] = {}
    for delivery in deliveries:
        ids.setdefault(routes[delivery.queue].name, []).append(_envelope_id(delivery))
    oldest: dict[str, datetime] = {}
    now = time.time()
    for name, route_ids in ids.items():
        seconds = ulid_seconds(min(route_ids, key=str.upper))
        if not seconds:  # not a ULID (or its time is 0: counted as now, as every such id)
            seconds = min(ulid_seconds(i) or now for i in route_ids)
        oldest[name] = datetime.fromtimestamp(min(seconds, now), UTC)
    return oldest


def _envelope_id(delivery: Delivery) -> str:
    """The envelope id without decoding the envelope (the transport carries it aside)."""
    if delivery.message_id:
        return delivery.message_id
    try:
        value = orjson.loads(delivery.body).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return value if isinstance(value, str) and len(value) <= 64 else ""


class _SettledFirst:
    """The store as a batch's delivery uses it (``claim`` alone) while the batch before may
    still be settling: a claim found busy may be held by that batch (a copy of the same key,
    one batch earlier, whose ``done`` is in the settlement in flight). Those are claimed again
    once that settlement has committed, so that such a copy is a duplicate, as it was when
    every batch waited for its own commit, not a retry."""

    def __init__(self, lane: Lane, store: Store, stop: threading.Event) -> None:
        self._lane, self._store, self._stop = lane, store, stop

    def claim(self, claims: Sequence[Claim], *, lease: timedelta) -> list[ClaimOutcome]:
        outcomes = self._store.claim(claims, lease=lease)
        busy = [i for i, outcome in enumerate(outcomes) if outcome is ClaimOutcome.BUSY]
        if busy and self._lane._settling is not None:
            self._lane._settled(self._stop)
            again = self._store.claim([claims[i] for i in busy], lease=lease)
            for i, outcome in zip(busy, again, strict=True):
                outcomes[i] = outcome
        return outcomes


def _settle_behind(ctx: LaneContext) -> SettleBehind | None:
    """PostgreSQL behind RabbitMQ: settlements commit while the lane goes on (store/behind.py),
    unless the options say otherwise."""
    db = ctx.store.db
    if db.dialect != "postgresql" or ctx.transport.embedded or not ctx.options.settle_behind:
        return None
    return SettleBehind(db.url, redaction=ctx.store.redaction)
