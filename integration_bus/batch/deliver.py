"""Claim every (sink, idempotency key) of a batch in the ledger, then call the sinks.

One transaction claims them all; then each claim is triaged: done before -> duplicate; busy
(another copy holds it) -> ``ClaimBusy``, retried later; in doubt (our own claim, redelivered
after a crash) -> a ``LookupSink`` is asked first; otherwise the output goes to its sink, the
outputs of one sink in one call (a ``BatchSink`` takes them at once) within the route's deadline.
Failures are recorded on the item (``Item.fail``); what they mean is decided later, by
``integration_bus.fate``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import structlog

from integration_bus.batch.item import Item, SinkCall, SinkResult
from integration_bus.connector import LookupSink, Sink, deduplicated_downstream
from integration_bus.envelope import Envelope
from integration_bus.errors import CircuitOpen, ClaimBusy
from integration_bus.metrics import Metrics, observe_many, ulid_seconds
from integration_bus.sinkcalls import SinkCalls
from integration_bus.store import Claim, ClaimOutcome, Store
from integration_bus.store.records import clip_text
from integration_bus.tracing import Tracing

__all__ = ["deliver"]

log = structlog.get_logger("integration_bus.worker")

_Work = tuple[Item, Sink, Envelope]


def deliver(items: Sequence[Item], store: Store, *, claim_lease: timedelta, calls: SinkCalls,
            metrics: Metrics, tracing: Tracing | None = None) -> list[SinkCall]:
    """Claim and deliver the outputs of every item that has not failed; one result per
    (item, sink, output), in order. Raises what the store raises (``StoreUnavailable``)."""
    work: list[_Work] = [(item, sink, out) for item in items if item.error is None
                         for sink in item.route.sinks for out in item.outputs]
    # No claim for a sink whose effect is deduplicated downstream (the bus republish sink).
    claimed = [i for i, (_, sink, _) in enumerate(work) if not deduplicated_downstream(sink)]
    claims = [Claim(sink.name, out.idempotency_key, item.owner, item.envelope.id,  # type: ignore[union-attr]
                    item.delivery.redelivered) for item, sink, out in (work[i] for i in claimed)]
    outcomes = [ClaimOutcome.CLAIMED] * len(work)
    for i, outcome in zip(claimed, store.claim(claims, lease=claim_lease) if claims else [],
                          strict=True):
        outcomes[i] = outcome
    results: list[SinkResult | None] = []  # None: to send
    to_send: dict[int, list[int]] = {}  # id(sink) -> indexes into work
    for index, ((item, sink, out), claim) in enumerate(zip(work, outcomes, strict=True)):
        results.append(_triage(item, sink, out, claim, calls))
        if results[-1] is None:
            to_send.setdefault(id(sink), []).append(index)
    for indexes in to_send.values():
        _send(work, indexes, results, calls, metrics, tracing)
    return [SinkCall(item, sink, out, result)  # type: ignore[arg-type]  # all sent by now
            for (item, sink, out), result in zip(work, results, strict=True)]


def _triage(item: Item, sink: Sink, out: Envelope, claim: ClaimOutcome,
            calls: SinkCalls) -> SinkResult | None:
    """The result a claim settles without sending, or None when the output is to be sent."""
    if claim is ClaimOutcome.DONE:
        return SinkResult.DUPLICATE
    if claim is ClaimOutcome.BUSY:
        item.fail(ClaimBusy(f"another copy of {out.idempotency_key!r} is being delivered to "
                            f"{sink.name}"), sink=sink.name)
        return SinkResult.BUSY
    if claim is ClaimOutcome.IN_DOUBT and isinstance(sink, LookupSink):
        try:
            if calls.lookup(sink, out, item.route.deadline):
                return SinkResult.RECOVERED
        except Exception as exc:
            item.fail(exc, sink=sink.name)
            return SinkResult.FAILED
    return None


def _send(work: list[_Work], indexes: list[int], results: list[SinkResult | None],
          calls: SinkCalls, metrics: Metrics, tracing: Tracing | None) -> None:
    item, sink = work[indexes[0]][0], work[indexes[0]][1]
    envelopes = [work[i][2] for i in indexes]
    spans = None
    if tracing is not None:  # a span per sink call; the sink sees it as trace parent
        spans, envelopes = _sink_spans(tracing, sink.name, [work[i][0] for i in indexes],
                                       envelopes)
    started = time.perf_counter()
    around = None
    if tracing is not None and spans is not None:
        traced, sink_spans = tracing, spans

        def around(index: int) -> AbstractContextManager[Any]:
            return traced.use(sink_spans[index])
    errors = calls.deliver(sink, envelopes, item.route.deadline, around)
    per_envelope = (time.perf_counter() - started) / len(envelopes)
    if tracing is not None and spans is not None:
        for span, error in zip(spans, errors, strict=False):
            if error is not None:
                tracing.failed(span, error)
            span.end()
    now = time.time()
    latency: dict[str, int] = {}  # route -> envelopes sent (observed once the call is counted)
    ages: dict[str, list[float]] = {}  # route -> flow ages of what was delivered
    for i, error in zip(indexes, errors, strict=True):
        item = work[i][0]
        route = item.route.name
        latency[route] = latency.get(route, 0) + 1
        if error is None:
            results[i] = SinkResult.DELIVERED
            began = ulid_seconds(work[i][2].correlation_id)
            if began is not None:
                ages.setdefault(route, []).append(max(0.0, now - began))
            continue
        results[i] = SinkResult.FAILED
        item.fail(error, sink=sink.name)
        if isinstance(error, CircuitOpen) and i != indexes[0]:
            continue  # the rest of a held batch: route.paused says it once
        log.info("sink.failed", route=item.route.name, sink=sink.name,
                 envelope_id=work[i][2].id, error=clip_text(f"{type(error).__name__}: {error}"))
    # per route, not per envelope: labels() takes a lock, observe() two (metrics.observe_many)
    for route, count in latency.items():
        observe_many(metrics.sink_latency.labels(route, sink.name), [per_envelope] * count)
    for route, values in ages.items():
        observe_many(metrics.flow_age.labels(route, sink.name), values)


def _sink_spans(tracing: Tracing, sink: str, items: list[Item],
                envelopes: list[Envelope]) -> tuple[list[Any], list[Envelope]]:
    spans = [tracing.start(f"sink {sink}", parent_span=item.span, kind="client",
                           attributes={"bus.sink": sink, "bus.route": item.route.name,
                                       "bus.output_id": out.id,
                                       "bus.idempotency_key": out.idempotency_key})
             for item, out in zip(items, envelopes, strict=True)]
    return spans, [tracing.stamp(out, span) for out, span in zip(envelopes, spans, strict=True)]
