"""A publisher that traces: one span per published envelope, its context put in the headers.

Wraps any :class:`~integration_bus.transport.base.TransportPublisher` when tracing is on (when
it is off, the runtime hands out the bare publisher: nothing here runs). The parent of each span
is the trace context the envelope carries (derived envelopes inherit it), else the current span
(a source's read, a poll), else none: the envelope then starts a trace (span ``source NAME``).
The published envelope carries the publish span as its parent, so the route that takes it
continues the same trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from integration_bus.envelope import Envelope
from integration_bus.errors import BusError
from integration_bus.topology import RETRY_EXCHANGE
from integration_bus.tracing import Tracing
from integration_bus.transport.base import IngressPublishing, Outgoing, TransportPublisher

__all__ = ["TracedPublisher"]


class TracedPublisher(IngressPublishing):
    """Same contract as the publisher it wraps. Thread-confined, like it."""

    def __init__(self, inner: TransportPublisher, tracing: Tracing) -> None:
        self._inner = inner
        self._tracing = tracing

    def _start(self, envelope: Envelope, name: str, destination: str,
               routing_key: str) -> tuple[Any, Envelope]:
        tracing = self._tracing
        parent = tracing.parent_of(envelope)
        if parent is None and not tracing.has_current():
            name = f"source {envelope.source}"
        span = tracing.start(name, parent=parent, kind="producer", attributes={
            "messaging.system": "rabbitmq", "messaging.operation.type": "send",
            "messaging.destination.name": destination,
            "messaging.rabbitmq.destination.routing_key": routing_key,
            "messaging.message.id": envelope.id,
            "messaging.message.conversation_id": envelope.correlation_id,
            "bus.type": envelope.type, "bus.source": envelope.source,
            "bus.idempotency_key": envelope.idempotency_key, "bus.attempt": envelope.attempt})
        return span, tracing.stamp(envelope, span)

    def _end(self, spans: Sequence[Any], outcomes: Sequence[BusError | None]) -> None:
        for span, outcome in zip(spans, outcomes, strict=False):
            if outcome is not None:
                self._tracing.failed(span, outcome)
            span.end()

    def send(self, messages: Sequence[Outgoing]) -> list[BusError | None]:
        spans, stamped = [], []
        for message in messages:
            name = (f"retry {message.routing_key}" if message.exchange == RETRY_EXCHANGE
                    else f"publish {message.envelope.type}")
            span, envelope = self._start(message.envelope, name, message.exchange,
                                         message.routing_key)
            spans.append(span)
            stamped.append(Outgoing(message.exchange, message.routing_key, envelope,
                                    message.headers))
        outcomes: list[BusError | None] = []
        try:
            outcomes = self._inner.send(stamped)
        finally:
            self._end(spans, outcomes or [BusError("the publish raised")] * len(spans))
        return outcomes

    def retry_later(self, route: str, envelopes: Sequence[Envelope],
                    delay_ms: int) -> list[BusError | None]:
        spans, stamped = [], []
        for envelope in envelopes:
            span, traced = self._start(envelope, f"retry {route}", RETRY_EXCHANGE, route)
            span.set_attribute("bus.retry.delay_ms", delay_ms)
            spans.append(span)
            stamped.append(traced)
        outcomes: list[BusError | None] = []
        try:
            outcomes = self._inner.retry_later(route, stamped, delay_ms)
        finally:
            self._end(spans, outcomes or [BusError("the retry publish raised")] * len(spans))
        return outcomes

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:  # transport extras (e.g. release_due)
        return getattr(self._inner, name)
