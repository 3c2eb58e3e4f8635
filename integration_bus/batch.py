"""One worker batch: from deliveries to a Settlement, retries and metrics (see ``worker``).

Pure bookkeeping plus the calls into pipelines, the ledger and sinks; no broker I/O here.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from integration_bus.connector import LookupSink, Sink
from integration_bus.envelope import Envelope, loads, new_id
from integration_bus.errors import BusError, CircuitOpen, CrashedWorker, PermanentError
from integration_bus.metrics import Metrics, ulid_seconds
from integration_bus.route import Route
from integration_bus.sinkcalls import SinkCalls
from integration_bus.store import Claim, ClaimOutcome, DeadLetter, Settlement, Store, utcnow
from integration_bus.store.records import JournalEntry, clip_text, traceback_text
from integration_bus.topology import route_of_queue
from integration_bus.tracing import Tracing
from integration_bus.transport import Delivery

__all__ = ["Batch", "Item", "Outcome"]

log = structlog.get_logger("integration_bus.worker")

MAX_KEY = 512  # the ledger's key column


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    FILTERED = "filtered"
    RETRY = "retried"
    HOLD = "held"  # a circuit breaker is open: wait without counting an attempt
    DEAD = "dead_lettered"


@dataclass
class Item:
    """One delivery on its way through a route."""

    delivery: Delivery
    route: Route
    envelope: Envelope | None = None
    outputs: list[Envelope] = field(default_factory=list)
    error: BaseException | None = None
    step: str | None = None
    sink: str | None = None
    outcome: Outcome | None = None
    mapping_version: str | None = None
    span: Any = None  # the route's span for this delivery (tracing on)
    crash_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def owner(self) -> str:
        assert self.envelope is not None
        return f"{self.envelope.id}#{self.envelope.attempt}"

    def retry_delay_ms(self) -> int:
        """The backoff for this attempt, or longer when the target said when to come back
        (a TransientError with ``retry_after_ms``, e.g. from HTTP 429 Retry-After), capped at
        the policy's ``max_delay``."""
        assert self.envelope is not None
        policy = self.route.retry
        delay = policy.delay_ms(self.envelope.attempt)
        asked = self.error.context.get("retry_after_ms") if isinstance(self.error, BusError) \
            else None
        if isinstance(asked, int | float) and (asked > delay or isinstance(self.error,
                                                                            CircuitOpen)):
            delay = int(min(max(asked, 1), policy.max_delay))
        return delay

    def fail(self, error: BaseException, *, step: str | None = None,
             sink: str | None = None) -> None:
        # A permanent failure decides the message's fate; an open circuit only when nothing
        # else went wrong (then the message just waits, without counting an attempt).
        if _rank(error) > _rank(self.error):
            self.error, self.step, self.sink = error, step, sink


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
        self._sink_results: list[tuple[Item, Sink, Envelope, str]] = []

    @classmethod
    def build(cls, deliveries: Sequence[Delivery], routes: Mapping[str, Route], *,
              archived: list[Delivery], claim_lease: timedelta, metrics: Metrics,
              calls: SinkCalls, held: Mapping[str, int] | None = None,
              crashed: Mapping[int, tuple[CrashedWorker, list[dict[str, Any]]]] | None = None,
              tracing: Tracing | None = None) -> Batch:
        """Decode every delivery and run its route's pipeline (no I/O). Deliveries of a queue
        in ``held`` (queue -> ms left of an open circuit) go back to wait, untouched; those in
        ``crashed`` (delivery tag -> error, crash history) are dead-lettered unexecuted.
        ``tracing`` (only when on): a span per delivery's route, its steps and sink calls."""
        items = []
        for delivery in deliveries:
            item = Item(delivery=delivery, route=routes[delivery.queue])
            try:
                item.envelope = Envelope.from_json(delivery.body)
            except BusError as exc:
                item.fail(exc.with_context(route=item.route.name), step="decode")
            else:
                if crashed and delivery.tag in crashed:
                    error, item.crash_history = crashed[delivery.tag]
                    item.fail(error.with_context(route=item.route.name,
                                                 envelope_id=item.envelope.id),
                              step="worker")
                elif held and delivery.queue in held:
                    item.fail(CircuitOpen("the route is paused: a sink's circuit is open",
                                          retry_after_ms=held[delivery.queue]))
                elif tracing is not None:
                    _run_traced(item, tracing)
                else:
                    _run_pipeline(item)
            items.append(item)
        return cls(items, archived, claim_lease=claim_lease, metrics=metrics, calls=calls,
                   tracing=tracing)

    # -- claim and deliver ---------------------------------------------------------------------
    def claim_and_deliver(self, store: Store) -> None:
        work = [(item, sink, out) for item in self.items if item.error is None
                for sink in item.route.sinks for out in item.outputs]
        claims = [Claim(sink.name, out.idempotency_key, item.owner, item.envelope.id,  # type: ignore[union-attr]
                        item.delivery.redelivered) for item, sink, out in work]
        outcomes = store.claim(claims, lease=self.claim_lease) if claims else []
        results: list[str] = []
        to_send: dict[int, list[int]] = {}  # id(sink) -> indexes into work
        for index, ((item, sink, out), claim) in enumerate(zip(work, outcomes, strict=True)):
            results.append(self._triage(item, sink, out, claim))
            if results[-1] == "send":
                to_send.setdefault(id(sink), []).append(index)
        for indexes in to_send.values():
            self._send(work, indexes, results)
        self._sink_results = [(item, sink, out, result)
                              for (item, sink, out), result in zip(work, results, strict=True)]
        self._decide()
        self._build_settlement()

    def _triage(self, item: Item, sink: Sink, out: Envelope, claim: ClaimOutcome) -> str:
        if claim is ClaimOutcome.DONE:
            return "duplicate"
        if claim is ClaimOutcome.BUSY:
            item.fail(_Busy(f"another copy of {out.idempotency_key!r} is being delivered to "
                            f"{sink.name}"), sink=sink.name)
            return "busy"
        if claim is ClaimOutcome.IN_DOUBT and isinstance(sink, LookupSink):
            try:
                if self.calls.lookup(sink, out, item.route.deadline):
                    return "recovered"
            except Exception as exc:
                item.fail(exc, sink=sink.name)
                return "failed"
        return "send"

    def _send(self, work: list[tuple[Item, Sink, Envelope]], indexes: list[int],
              results: list[str]) -> None:
        item, sink = work[indexes[0]][0], work[indexes[0]][1]
        envelopes = [work[i][2] for i in indexes]
        spans = None
        if self.tracing is not None:  # a span per sink call; the sink sees it as trace parent
            spans, envelopes = _sink_spans(self.tracing, sink.name,
                                           [work[i][0] for i in indexes], envelopes)
        started = time.perf_counter()
        around = None
        if spans is not None:
            tracing, sink_spans = self.tracing, spans

            def around(index: int) -> AbstractContextManager[Any]:
                return tracing.use(sink_spans[index])  # type: ignore[union-attr]
        errors = self.calls.deliver(sink, envelopes, item.route.deadline, around)
        per_envelope = (time.perf_counter() - started) / len(envelopes)
        if spans is not None:
            for span, error in zip(spans, errors, strict=False):
                if error is not None:
                    self.tracing.failed(span, error)  # type: ignore[union-attr]
                span.end()
        now = time.time()
        for i, error in zip(indexes, errors, strict=True):
            item = work[i][0]
            self.metrics.sink_latency.labels(item.route.name, sink.name).observe(per_envelope)
            if error is None:
                results[i] = "delivered"
                began = ulid_seconds(work[i][2].correlation_id)
                if began is not None:
                    self.metrics.flow_age.labels(item.route.name, sink.name).observe(
                        max(0.0, now - began))
                continue
            results[i] = "failed"
            item.fail(error, sink=sink.name)
            if isinstance(error, CircuitOpen) and i != indexes[0]:
                continue  # the rest of a held batch: route.paused says it once
            log.info("sink.failed", route=item.route.name, sink=sink.name,
                     envelope_id=work[i][2].id, error=clip_text(f"{type(error).__name__}: {error}"))

    def _decide(self) -> None:
        for item in self.items:
            if item.error is None:
                item.outcome = Outcome.DELIVERED if item.outputs else Outcome.FILTERED
            elif isinstance(item.error, CircuitOpen) and item.envelope is not None:
                item.outcome = Outcome.HOLD
            elif (isinstance(item.error, PermanentError) or item.envelope is None
                  or item.envelope.attempt + 1 >= item.route.retry.max_attempts):
                item.outcome = Outcome.DEAD
            else:
                item.outcome = Outcome.RETRY

    # -- settlement ------------------------------------------------------------------------------
    def _build_settlement(self) -> None:
        now = utcnow()
        s = self.settlement = Settlement()
        for item in self.items:
            env = item.envelope
            if env is not None:
                s.journal.append(JournalEntry(
                    env.id, "received", now, route=item.route.name, attempt=env.attempt,
                    mapping_version=item.mapping_version,
                    detail={"type": env.type, "redelivered": item.delivery.redelivered,
                            "delivery_count": item.delivery.delivery_count,
                            # lineage for `bus trace` (ancestors, descendants, --key)
                            "causation_id": env.causation_id,
                            "correlation_id": env.correlation_id,
                            "key": env.idempotency_key}))
        for item, sink, out, result in self._sink_results:
            env = item.envelope
            assert env is not None
            key = (sink.name, out.idempotency_key, item.owner)
            if result in ("delivered", "recovered", "duplicate"):
                s.journal.append(JournalEntry(
                    env.id, "duplicate" if result == "duplicate" else "delivered", now,
                    route=item.route.name, sink=sink.name, attempt=env.attempt,
                    detail={"output_id": out.id, "key": out.idempotency_key,
                            **({"recovered": True} if result == "recovered" else {})}))
                if result != "duplicate":
                    s.done.append(key)
            elif result == "failed":
                s.failed.append(key)
        for item in self.items:
            self._settle_item(item, now)
        # Broker dead letters are written in a transaction of their own: a row the database
        # refuses there must not hold back the route messages of the same batch.
        archive = self.archive = Settlement()
        for delivery in self.archived:
            letter = _archived_letter(delivery, now)
            archive.dead.append(letter)
            archive.journal.append(JournalEntry(letter.envelope["id"], "dead_lettered", now,
                                          route=letter.route,
                                          detail={"reason": letter.reason,
                                                  "error_type": letter.error_type}))

    def _settle_item(self, item: Item, now: Any) -> None:
        env, s = item.envelope, self.settlement
        if item.outcome in (Outcome.DELIVERED, Outcome.FILTERED):
            if item.outcome is Outcome.FILTERED:
                s.journal.append(JournalEntry(env.id, "filtered", now,  # type: ignore[union-attr]
                                              route=item.route.name, attempt=env.attempt))  # type: ignore[union-attr]
            return
        error = item.error
        assert error is not None
        detail: dict[str, Any] = {"error_type": _type_name(error), "message": _message(error),
                                  "step": item.step, "sink": item.sink}
        if item.outcome in (Outcome.RETRY, Outcome.HOLD):
            assert env is not None
            detail["delay_ms"] = item.retry_delay_ms()
            s.journal.append(JournalEntry(env.id, item.outcome.value, now, route=item.route.name,
                                          sink=item.sink, attempt=env.attempt, detail=detail))
            return
        envelope = env.to_dict() if env is not None else _raw_envelope(item.delivery)
        exhausted = not isinstance(error, PermanentError) and env is not None
        message = _message(error)
        if exhausted:
            message = f"gave up after {env.attempt + 1} attempt(s): {message}"  # type: ignore[union-attr]
        crashed = isinstance(error, CrashedWorker)
        if crashed:
            detail["crashes"] = len(item.crash_history)
        s.journal.append(JournalEntry(envelope["id"], "dead_lettered", now,
                                      route=item.route.name, sink=item.sink,
                                      attempt=env.attempt if env else 0, detail=detail))
        if crashed:
            s.dead.append(DeadLetter(
                id=new_id(), envelope=envelope, route=item.route.name, reason="crashed_worker",
                error_type=_type_name(error), message=message, failed_at=now, step=item.step,
                source_ref=(env.headers.get("source_ref") if env else None),
                attempts=item.crash_history))
            return
        s.dead.append(DeadLetter(
            id=new_id(), envelope=envelope, route=item.route.name, reason="error",
            error_type=_type_name(error), message=message, failed_at=now, step=item.step,
            sink=item.sink, traceback=traceback_text(error),
            source_ref=(env.headers.get("source_ref") if env else None), code=_code(error),
            attempts=[{"attempt": env.attempt if env else 0, "at": now.isoformat(),
                       "sink": item.sink, "step": item.step, "error_type": _type_name(error),
                       "message": _message(error)}]))

    # -- after the settlement is stored ------------------------------------------------------------
    def retries(self) -> dict[tuple[str, int], list[Envelope]]:
        out: dict[tuple[str, int], list[Envelope]] = {}
        for item in self.items:
            if item.outcome is Outcome.RETRY and item.envelope is not None:
                delay = item.retry_delay_ms()
                out.setdefault((item.route.name, delay), []).append(
                    self._traced(item, item.envelope.next_attempt()))
            elif item.outcome is Outcome.HOLD and item.envelope is not None:
                out.setdefault((item.route.name, item.retry_delay_ms()), []).append(
                    self._traced(item, item.envelope))  # the same attempt: an open circuit
        return out                                          # is not the message's fault

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
            outcome = item.outcome.value if item.outcome is not None else "unsettled"
            span.set_attribute("bus.outcome", outcome)
            if item.outcome is Outcome.RETRY:
                span.add_event("retry", {"bus.retry.delay_ms": item.retry_delay_ms()})
            if item.error is not None and item.outcome is not Outcome.HOLD:
                self.tracing.failed(span, item.error)
            span.end()

    def holds(self) -> dict[str, int]:
        """Routes to pause because a sink's circuit is open: route -> milliseconds."""
        out: dict[str, int] = {}
        for item in self.items:
            if item.outcome is Outcome.HOLD:
                out[item.route.name] = max(out.get(item.route.name, 0), item.retry_delay_ms())
        return out

    def count_settled(self) -> None:
        m = self.metrics
        for item in self.items:
            m.route_messages.labels(item.route.name, "received").inc()
            if item.outcome is not None:
                m.route_messages.labels(item.route.name, item.outcome.value).inc()
        for item, sink, _out, result in self._sink_results:
            m.sink_deliveries.labels(item.route.name, sink.name, result).inc()
        for _ in self.archived:
            m.route_messages.labels("", "dead_lettered").inc()


def _rank(error: BaseException | None) -> int:
    if error is None:
        return 0
    if isinstance(error, CircuitOpen):
        return 1
    return 3 if isinstance(error, PermanentError) else 2


class _Busy(BusError):
    """Transient by design (not a TransientError subclass to keep it private)."""


def _run_pipeline(item: Item, tracing: Tracing | None = None) -> None:
    envelope = item.envelope
    assert envelope is not None
    # A reloadable pipeline may be swapped meanwhile: run and record the very same version.
    pipeline = getattr(item.route.pipeline, "current", item.route.pipeline)
    item.mapping_version = pipeline.version
    if tracing is not None:
        pipeline = tracing.pipeline(pipeline)
    try:
        item.outputs = pipeline(envelope)
        for out in item.outputs:
            if len(out.idempotency_key) > MAX_KEY:
                raise PermanentError(f"output idempotency key longer than {MAX_KEY} characters",
                                     field="idempotency_key", hint="derive shorter keys")
    except BusError as exc:
        exc.with_context(route=item.route.name, envelope_id=envelope.id)
        item.fail(exc, step=str(exc.context.get("step") or item.route.pipeline.name))
    except Exception as exc:  # a pipeline bug: retry, then dead-letter with the traceback
        item.fail(exc, step=item.route.pipeline.name)


def _run_traced(item: Item, tracing: Tracing) -> None:
    """:func:`_run_pipeline` inside the delivery's route span (a child of the trace context
    the envelope carries), a span per mapping step; the outputs then point at the route span."""
    envelope, route = item.envelope, item.route
    assert envelope is not None
    item.span = span = tracing.start(
        f"route {route.name}", parent=tracing.parent_of(envelope), kind="consumer",
        attributes={"messaging.system": "rabbitmq", "messaging.operation.type": "process",
                    "messaging.destination.name": route.queue,
                    "messaging.message.id": envelope.id,
                    "messaging.message.conversation_id": envelope.correlation_id,
                    "bus.route": route.name, "bus.type": envelope.type,
                    "bus.idempotency_key": envelope.idempotency_key,
                    "bus.attempt": envelope.attempt,
                    "bus.redelivered": item.delivery.redelivered})
    with tracing.use(span):
        _run_pipeline(item, tracing)
    item.outputs = [tracing.stamp(out, span) for out in item.outputs]


def _sink_spans(tracing: Tracing, sink: str, items: list[Item],
                envelopes: list[Envelope]) -> tuple[list[Any], list[Envelope]]:
    spans = [tracing.start(f"sink {sink}", parent_span=item.span, kind="client",
                           attributes={"bus.sink": sink, "bus.route": item.route.name,
                                       "bus.output_id": out.id,
                                       "bus.idempotency_key": out.idempotency_key})
             for item, out in zip(items, envelopes, strict=True)]
    return spans, [tracing.stamp(out, span) for out, span in zip(envelopes, spans, strict=True)]


def _type_name(error: BaseException) -> str:
    return error.error_type if isinstance(error, BusError) else type(error).__name__


def _code(error: BaseException) -> str | None:
    """The target's own fault code, where the error carries one (groups dead letters)."""
    code = error.context.get("fault_code") if isinstance(error, BusError) else None
    return str(code) if code else None


def _message(error: BaseException) -> str:
    return clip_text(error.message if isinstance(error, BusError)
                     else str(error) or type(error).__name__)


def _raw_envelope(delivery: Delivery) -> dict[str, Any]:
    message_id = getattr(delivery.raw, "properties", {}).get("message_id")
    return {"id": message_id or new_id(), "raw": delivery.body.decode("utf-8", "replace")}


def _archived_letter(delivery: Delivery, now: Any) -> DeadLetter:
    """A message the broker dead-lettered (delivery limit, expiry): archived with its reason."""
    headers = delivery.headers
    reason = str(headers.get("x-first-death-reason") or "rejected")
    queue = str(headers.get("x-first-death-queue") or "")
    try:
        envelope: dict[str, Any] = loads(delivery.body)
        Envelope.from_dict(envelope)
    except Exception:
        envelope = _raw_envelope(delivery)
    deaths = headers.get("x-death") or []
    count = deaths[0].get("count") if deaths else None
    return DeadLetter(
        id=new_id(), envelope=envelope, route=route_of_queue(queue), reason=reason,
        error_type="DeliveryLimitExceeded" if reason == "delivery_limit" else "BrokerDeadLetter",
        message=f"the broker dead-lettered the message from {queue or 'a queue'}: {reason}"
                + (f" (x-death count {count})" if count else ""),
        failed_at=now, source_ref=(envelope.get("headers") or {}).get("source_ref"))
