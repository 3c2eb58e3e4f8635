"""What a transport offers the runtime: declare a topology, publish with confirms, consume.

Two implementations, both on kombu: ``amqp`` (RabbitMQ, production) and ``memory`` (embedded
mode: one process, retry delays kept by the bus). Publishers and consumers are thread-confined;
each owns its connection (RabbitMQ applies flow control per connection, so publishing and
consuming never share one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from integration_bus.envelope import Envelope
from integration_bus.errors import BusError
from integration_bus.topology import INGRESS_EXCHANGE, Topology

__all__ = ["Consumer", "Delivery", "IngressPublishing", "Outgoing", "QueueStats", "Transport",
           "TransportPublisher"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish: where to, and the envelope (the body is its JSON)."""

    exchange: str
    routing_key: str
    envelope: Envelope
    headers: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def ingress(cls, envelope: Envelope) -> Outgoing:
        return cls(INGRESS_EXCHANGE, envelope.type, envelope)


@dataclass(slots=True)
class Delivery:
    """A message taken from a queue, not yet acknowledged."""

    body: bytes
    queue: str
    redelivered: bool
    delivery_count: int  # how often the broker handed it out before (quorum x-delivery-count)
    headers: Mapping[str, Any]
    tag: int
    raw: Any  # the transport's message object, for ack
    message_id: str | None = None  # the envelope id, when the transport carries it aside


@dataclass(frozen=True, slots=True)
class QueueStats:
    messages: int
    consumers: int


class TransportPublisher(Protocol):
    """Publishes persistently, mandatory, with publisher confirms. Thread-confined."""

    def send(self, messages: Sequence[Outgoing]) -> list[BusError | None]:
        """One outcome per message in order: None once confirmed and routed; otherwise the error
        (UnroutableError, PublishNacked, BrokerUnavailable). Never None for an unconfirmed one."""

    def publish(self, envelope: Envelope) -> None:
        """Publish to ``bus.ingress`` by type; raise the error if it was not confirmed+routed."""

    def publish_many(self, envelopes: Sequence[Envelope]) -> list[BusError | None]: ...

    def retry_later(self, route: str, envelopes: Sequence[Envelope],
                    delay_ms: int) -> list[BusError | None]:
        """Hand envelopes to the retry tier of ``delay_ms``; they come back to ``route``'s
        queue after the delay."""

    def close(self) -> None: ...


class IngressPublishing:
    """``publish`` and ``publish_many`` of a :class:`TransportPublisher` in terms of its
    ``send``: every transport's publisher (and the tracing wrapper) shares them."""

    def send(self, messages: Sequence[Outgoing]) -> list[BusError | None]:
        raise NotImplementedError

    def publish(self, envelope: Envelope) -> None:
        (outcome,) = self.send([Outgoing.ingress(envelope)])
        if outcome is not None:
            raise outcome

    def publish_many(self, envelopes: Sequence[Envelope]) -> list[BusError | None]:
        return self.send([Outgoing.ingress(e) for e in envelopes])


class Consumer(Protocol):
    """Consumes route queues with manual ack and a per-consumer prefetch. Thread-confined."""

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        """Wait up to ``timeout`` s for at least one delivery; return up to ``max_count``."""

    def pause(self, queue: str) -> None:
        """Stop consuming one queue (its messages wait there) until :meth:`resume`."""

    def resume(self, queue: str) -> None: ...

    def stop_consuming(self) -> None:
        """Ask the broker to stop delivering; deliveries already sent stay fetchable."""

    def keepalive(self, timeout: float) -> None:
        """Serve heartbeats for ``timeout`` s (while paused) without handing deliveries out."""

    def read_ahead(self, max_count: int, wait: float, wake: Sequence[int] = ()) -> bool:
        """Take in deliveries already on their way, without handing any out (the next
        :meth:`fetch` does), waiting at most ``wait`` s for one, and no longer once one of the
        ``wake`` descriptors is readable (a transport that cannot watch them waits a fraction
        of a millisecond at most); False once ``max_count`` are buffered or nothing can be
        read ahead. Never raises: a broken connection shows at the next :meth:`fetch` or
        :meth:`ack`."""

    def take_read(self, max_count: int) -> list[Delivery]:
        """Up to ``max_count`` of the deliveries already read (see :meth:`read_ahead`), with
        no I/O at all: [] when none are, or when the connection is known to be broken. Never
        raises."""

    def ack(self, deliveries: Sequence[Delivery]) -> None: ...

    def set_prefetch(self, count: int) -> None: ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Factory for publishers and consumers on one broker (or the embedded one)."""

    embedded: bool

    def declare(self, topology: Topology) -> None:
        """Declare every exchange, queue and binding; idempotent. ConfigError if an existing
        queue has other arguments."""

    def publisher(self) -> TransportPublisher: ...

    def consumer(self, queues: Sequence[str], prefetch: int) -> Consumer: ...

    def queue_stats(self, queue: str) -> QueueStats | None: ...

    def queue_depths(self, queues: Sequence[str]) -> dict[str, QueueStats | None]:
        """:meth:`queue_stats` of each queue, read together (one broker connection)."""

    def retry_waiting(self) -> int:
        """Messages waiting in retry tiers (all routes)."""

    def close(self) -> None: ...
