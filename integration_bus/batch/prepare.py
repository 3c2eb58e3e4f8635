"""Decode a fetch's deliveries and run their routes' pipelines: no I/O, so it can run again."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from integration_bus.batch.item import Item
from integration_bus.envelope import Envelope
from integration_bus.errors import BusError, CircuitOpen, CrashedWorker, PermanentError
from integration_bus.route import Route
from integration_bus.tracing import Tracing
from integration_bus.transport import Delivery

__all__ = ["MAX_KEY", "prepare"]

MAX_KEY = 512  # the ledger's key column


def prepare(deliveries: Sequence[Delivery], routes: Mapping[str, Route], *,
            held: Mapping[str, int] | None = None,
            crashed: Mapping[int, tuple[CrashedWorker, list[dict[str, Any]]]] | None = None,
            tracing: Tracing | None = None) -> list[Item]:
    """An item per delivery, decoded and mapped. Deliveries of a queue in ``held`` (queue ->
    ms left of an open circuit) go back to wait, untouched; those in ``crashed`` (delivery
    tag -> error, crash history) are dead-lettered unexecuted. ``tracing`` (only when on): a
    span per delivery's route and its steps."""
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
    return items


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
