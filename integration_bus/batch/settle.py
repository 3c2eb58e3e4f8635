"""What a decided batch writes to the store, in one transaction: journal rows, ledger outcomes,
dead letters (:func:`settlement`); and the archive of what the broker dead-lettered, in one of its
own (:func:`archive`). Pure: builds ``Settlement`` values, the lane stores them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from integration_bus import fate
from integration_bus.batch.item import Item, SinkCall, SinkResult
from integration_bus.connector import deduplicated_downstream
from integration_bus.envelope import Envelope, loads, new_id
from integration_bus.errors import BusError
from integration_bus.store import DeadLetter, Settlement
from integration_bus.store.records import JournalEntry, clip_text, traceback_text
from integration_bus.topology import route_of_queue
from integration_bus.transport import Delivery

__all__ = ["archive", "settlement"]


def settlement(items: Sequence[Item], calls: Sequence[SinkCall], now: datetime) -> Settlement:
    """The batch's settlement; every item has its fate decided."""
    s = Settlement()
    for item in items:
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
    for call in calls:
        item, env = call.item, call.item.envelope
        assert env is not None
        # a sink deduplicated downstream took no claim (deliver): no ledger row to settle
        key = (None if deduplicated_downstream(call.sink)
               else (call.sink.name, call.output.idempotency_key, item.owner))
        if call.result.done:
            duplicate = call.result is SinkResult.DUPLICATE
            s.journal.append(JournalEntry(
                env.id, "duplicate" if duplicate else "delivered", now,
                route=item.route.name, sink=call.sink.name, attempt=env.attempt,
                detail={"output_id": call.output.id, "key": call.output.idempotency_key,
                        **({"recovered": True} if call.result is SinkResult.RECOVERED
                           else {})}))
            if not duplicate and key is not None:
                s.done.append(key)
        elif call.result is SinkResult.FAILED and key is not None:
            s.failed.append(key)
    for item in items:
        _settle_item(s, item, now)
    return s


def _settle_item(s: Settlement, item: Item, now: datetime) -> None:
    env, verdict = item.envelope, item.fate
    assert verdict is not None, "decide the batch before settling it"
    if isinstance(verdict, fate.Deliver):
        if verdict.filtered:
            assert env is not None
            s.journal.append(JournalEntry(env.id, "filtered", now, route=item.route.name,
                                          attempt=env.attempt))
        return
    error = item.error
    assert error is not None
    detail: dict[str, Any] = {"error_type": _type_name(error), "message": _message(error),
                              "step": item.step, "sink": item.sink}
    if isinstance(verdict, fate.Retry | fate.Hold):
        assert env is not None
        detail["delay_ms"] = verdict.delay_ms
        s.journal.append(JournalEntry(env.id, verdict.label, now, route=item.route.name,
                                      sink=item.sink, attempt=env.attempt, detail=detail))
        return
    envelope = env.to_dict() if env is not None else _raw_envelope(item.delivery)
    message = _message(error)
    if verdict.exhausted:
        assert env is not None
        message = f"gave up after {env.attempt + 1} attempt(s): {message}"
    crashed = verdict.reason == "crashed_worker"
    if crashed:
        detail["crashes"] = len(item.crash_history)
    s.journal.append(JournalEntry(envelope["id"], verdict.label, now,
                                  route=item.route.name, sink=item.sink,
                                  attempt=env.attempt if env else 0, detail=detail))
    source_ref = env.headers.get("source_ref") if env else None
    if crashed:
        s.dead.append(DeadLetter(
            id=new_id(), envelope=envelope, route=item.route.name, reason=verdict.reason,
            error_type=_type_name(error), message=message, failed_at=now, step=item.step,
            source_ref=source_ref, attempts=item.crash_history))
        return
    s.dead.append(DeadLetter(
        id=new_id(), envelope=envelope, route=item.route.name, reason=verdict.reason,
        error_type=_type_name(error), message=message, failed_at=now, step=item.step,
        sink=item.sink, traceback=traceback_text(error), source_ref=source_ref,
        code=_code(error),
        attempts=[{"attempt": env.attempt if env else 0, "at": now.isoformat(),
                   "sink": item.sink, "step": item.step, "error_type": _type_name(error),
                   "message": _message(error)}]))


def archive(archived: Sequence[Delivery], now: datetime) -> Settlement:
    """Broker dead letters, written in a transaction of their own: a row the database refuses
    there must not hold back the route messages of the same batch."""
    out = Settlement()
    for delivery in archived:
        letter = _archived_letter(delivery, now)
        out.dead.append(letter)
        out.journal.append(JournalEntry(letter.envelope["id"], "dead_lettered", now,
                                        route=letter.route,
                                        detail={"reason": letter.reason,
                                                "error_type": letter.error_type}))
    return out


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
    return {"id": delivery.message_id or new_id(), "raw": delivery.body.decode("utf-8", "replace")}


def _archived_letter(delivery: Delivery, now: datetime) -> DeadLetter:
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
