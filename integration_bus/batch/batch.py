"""One worker batch: from deliveries to a Settlement, retries and metrics (see ``lane``).

The steps, one module each: ``prepare`` (decode, run pipelines: no I/O), ``deliver`` (claim
in the ledger, call sinks), then each message's fate from ``integration_bus.fate`` (pure), then
``settle`` (what the store records). No broker I/O here: the lane stores the settlement, hands
:meth:`Batch.retries` to the retry tiers, pauses :meth:`Batch.holds` and acks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from integration_bus import fate
from integration_bus.batch.deliver import deliver
from integration_bus.batch.item import Item, SinkCall
from integration_bus.batch.prepare import prepare
from integration_bus.batch.settle import archive, settlement
from integration_bus.envelope import Envelope
from integration_bus.errors import CrashedWorker
from integration_bus.metrics import Metrics
from integration_bus.route import Route
from integration_bus.sinkcalls import SinkCalls
from integration_bus.store import Settlement, Store, utcnow
from integration_bus.tracing import Tracing
from integration_bus.transport import Delivery

__all__ = ["Batch"]


class Batch:
    """Deliveries of one fetch. Build with :meth:`build`, then run the steps in order."""

    def __init__(self, items: list[Item], archived: list[Delivery], *, claim_lease: timedelta,
                 metrics: Metrics, calls: SinkCalls, tracing: Tracing | None = None) -> None:
        self.items = items
        self.tracing = tracing
        self.archived = archived
        self.claim_lease = claim_lease
        self.metrics = metrics
        self.calls = calls  # the lane's sink threads (deadlines)
        self.settlement = Settlement()
        self.archive = Settlement()
        self.sink_calls: list[SinkCall] = []

    @classmethod
    def build(cls, deliveries: Sequence[Delivery], routes: Mapping[str, Route], *,
              archived: list[Delivery], claim_lease: timedelta, metrics: Metrics,
              calls: SinkCalls, held: Mapping[str, int] | None = None,
              crashed: Mapping[int, tuple[CrashedWorker, list[dict[str, Any]]]] | None = None,
              tracing: Tracing | None = None) -> Batch:
        """Decode every delivery and run its route's pipeline (no I/O; see ``prepare`` for
        ``held``, ``crashed`` and ``tracing``)."""
        items = prepare(deliveries, routes, held=held, crashed=crashed, tracing=tracing)
        return cls(items, archived, claim_lease=claim_lease, metrics=metrics, calls=calls,
                   tracing=tracing)

    def claim_and_deliver(self, store: Store) -> None:
        """Claim and deliver, decide every message's fate, build the settlements. Raises
        ``StoreUnavailable`` (the lane waits for the store and runs it again)."""
        self.sink_calls = deliver(self.items, store, claim_lease=self.claim_lease,
                                  calls=self.calls, metrics=self.metrics, tracing=self.tracing)
        for item in self.items:
            item.decide_fate()
        now = utcnow()
        self.settlement = settlement(self.items, self.sink_calls, now)
        self.archive = archive(self.archived, now)

    # -- after the settlement is stored ------------------------------------------------------------
    def retries(self) -> dict[tuple[str, int], list[Envelope]]:
        """Envelopes for the retry tiers: (route, delay ms) -> envelopes. A retry is the next
        attempt; a hold is the same attempt again (an open circuit is not the message's fault)."""
        out: dict[tuple[str, int], list[Envelope]] = {}
        for item in self.items:
            if item.envelope is None:
                continue
            if isinstance(item.fate, fate.Retry):
                out.setdefault((item.route.name, item.fate.delay_ms), []).append(
                    self._traced(item, item.envelope.next_attempt()))
            elif isinstance(item.fate, fate.Hold):
                out.setdefault((item.route.name, item.fate.delay_ms), []).append(
                    self._traced(item, item.envelope))
        return out

    def _traced(self, item: Item, envelope: Envelope) -> Envelope:
        """A retried envelope continues its trace under this attempt's route span."""
        if self.tracing is None or item.span is None:
            return envelope
        return self.tracing.stamp(envelope, item.span)

    def end_spans(self) -> None:
        """End the route spans with each delivery's outcome (after the batch is settled)."""
        if self.tracing is None:
            return
        for item in self.items:
            if item.span is None:
                continue
            span, item.span = item.span, None
            span.set_attribute("bus.outcome",
                               item.fate.label if item.fate is not None else "unsettled")
            if isinstance(item.fate, fate.Retry):
                span.add_event("retry", {"bus.retry.delay_ms": item.fate.delay_ms})
            if item.error is not None and not isinstance(item.fate, fate.Hold):
                self.tracing.failed(span, item.error)
            span.end()

    def holds(self) -> dict[str, int]:
        """Routes to pause because a sink's circuit is open: route -> milliseconds."""
        out: dict[str, int] = {}
        for item in self.items:
            if isinstance(item.fate, fate.Hold):
                out[item.route.name] = max(out.get(item.route.name, 0), item.fate.delay_ms)
        return out

    def count_settled(self) -> None:
        """The batch's counters, one ``inc(n)`` per label set (not one per message)."""
        m = self.metrics
        routes: Counter[tuple[str, str]] = Counter()
        for item in self.items:
            routes[item.route.name, "received"] += 1
            if item.fate is not None:
                routes[item.route.name, item.fate.label] += 1
        if self.archived:
            routes["", "dead_lettered"] += len(self.archived)
        for (route, outcome), count in routes.items():
            m.route_messages.labels(route, outcome).inc(count)
        sinks = Counter((c.item.route.name, c.sink.name, c.result.value) for c in self.sink_calls)
        for (route, sink, result), n in sinks.items():
            m.sink_deliveries.labels(route, sink, result).inc(n)
