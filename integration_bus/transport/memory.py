"""Embedded mode: kombu's memory transport, one process, with state owned by a broker object.

kombu keeps memory-transport state at class level (every memory Connection in a process shares
it); :class:`EmbeddedBroker` gives each bus its own subclass, so two buses (or two tests) in one
process never see each other's messages. RabbitMQ-only features are done by the bus: retry tiers
are a delay heap released by consumers as they poll; there is no broker-side delivery limit.
In-flight messages live in memory and are lost if the process dies (docs/embedded.md).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from queue import Empty
from typing import Any

from kombu import Connection, Consumer, Exchange, Producer, Queue, binding
from kombu.transport import memory, virtual

from integration_bus.envelope import MAX_MESSAGE_BYTES, Envelope
from integration_bus.errors import BusError, UnpublishableError, UnroutableError
from integration_bus.topology import (
    ATTEMPT_HEADER,
    INGRESS_EXCHANGE,
    REQUEUE_EXCHANGE,
    Topology,
)
from integration_bus.transport.base import Delivery, Outgoing, QueueStats

__all__ = ["EmbeddedBroker", "MemoryTransport"]


class EmbeddedBroker:
    """The in-process broker: its own kombu memory transport class and the retry delay heap."""

    def __init__(self) -> None:
        class _Channel(memory.Channel):  # type: ignore[misc]
            events: Any = defaultdict(set)
            queues: Any = {}

        class _Transport(memory.Transport):  # type: ignore[misc]
            Channel = _Channel
            global_state = virtual.BrokerState()

        self.transport_class = _Transport
        self._delayed: list[tuple[float, int, str, Envelope]] = []
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def delay(self, route: str, envelope: Envelope, delay_ms: int) -> None:
        due = time.monotonic() + delay_ms / 1000
        with self._lock:
            heapq.heappush(self._delayed, (due, next(self._counter), route, envelope))

    def take_all(self) -> list[tuple[str, Envelope]]:
        """Every message still waiting for a retry (at shutdown), whatever its due time."""
        with self._lock:
            out = [(route, envelope) for _, _, route, envelope in sorted(self._delayed)]
            self._delayed.clear()
        return out

    def take_due(self) -> list[tuple[str, Envelope]]:
        now = time.monotonic()
        out = []
        with self._lock:
            while self._delayed and self._delayed[0][0] <= now:
                _, _, route, envelope = heapq.heappop(self._delayed)
                out.append((route, envelope))
        return out

    def waiting(self) -> dict[str, int]:
        with self._lock:
            counts: dict[str, int] = defaultdict(int)
            for _, _, route, _ in self._delayed:
                counts[route] += 1
        return dict(counts)


class MemoryTransport:
    """Transport on an :class:`EmbeddedBroker` (a new one unless given)."""

    embedded = True

    def __init__(self, broker: EmbeddedBroker | None = None, *,
                 polling_interval: float = 0.005, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self.broker = broker or EmbeddedBroker()
        self.max_message = max_message
        self.polling_interval = polling_interval
        self.topology: Topology | None = None

    def connect(self) -> Connection:
        conn = Connection("memory://", transport=self.broker.transport_class,
                          transport_options={"polling_interval": self.polling_interval})
        conn.connect()
        return conn

    def declare(self, topology: Topology) -> None:
        self.topology = topology
        conn = self.connect()
        try:
            channel = conn.channel()
            ingress = Exchange(INGRESS_EXCHANGE, "topic", durable=True)
            requeue = Exchange(REQUEUE_EXCHANGE, "direct", durable=True)
            for route in topology.routes:
                bindings = [binding(ingress, routing_key=p) for p in route.patterns]
                bindings.append(binding(requeue, routing_key=route.route))
                Queue(route.queue, bindings=bindings, durable=True)(channel).declare()
        finally:
            conn.release()

    def publisher(self) -> MemoryPublisher:
        return MemoryPublisher(self)

    def consumer(self, queues: Sequence[str], prefetch: int) -> MemoryConsumer:
        return MemoryConsumer(self, queues, prefetch)

    def queue_stats(self, queue: str) -> QueueStats | None:
        conn = self.connect()
        try:
            channel = conn.channel()
            if not channel._has_queue(queue):
                return None
            _, messages, _ = channel.queue_declare(queue, passive=True)
            return QueueStats(messages=messages, consumers=0)
        finally:
            conn.release()

    def queue_depths(self, queues: Sequence[str]) -> dict[str, QueueStats | None]:
        return {queue: self.queue_stats(queue) for queue in queues}

    def retry_waiting(self) -> int:
        return sum(self.broker.waiting().values())

    def evacuate(self) -> list[tuple[str, Envelope]]:
        """Take every message out of the embedded broker: (route, envelope) pairs of what was
        queued or waiting for a retry. Call once consumers have stopped (graceful shutdown),
        to keep them in durable storage until the next start."""
        out = []
        conn = self.connect()
        try:
            channel = conn.channel()
            for route in self.topology.routes if self.topology else ():
                while True:
                    try:
                        raw = channel._get(route.queue)
                    except Empty:
                        break
                    message = channel.message_to_python(raw)
                    out.append((route.route, Envelope.from_json(message.body)))
        finally:
            conn.release()
        return out + self.broker.take_all()

    def close(self) -> None:
        """The broker lives as long as the objects holding it."""


class MemoryPublisher:
    """Publishes into the embedded broker; 'confirmed' means 'in the queue'. Unroutable messages
    are refused exactly as a mandatory publish on RabbitMQ would be."""

    def __init__(self, transport: MemoryTransport) -> None:
        self._transport = transport
        self._conn = transport.connect()
        self._channel = self._conn.channel()
        self._producer = Producer(self._channel)

    def send(self, messages: Sequence[Outgoing]) -> list[BusError | None]:
        outcomes: list[BusError | None] = []
        for message in messages:
            try:  # one that cannot travel fails alone, as on RabbitMQ
                message.envelope.encode(self._transport.max_message)
            except UnpublishableError as exc:
                outcomes.append(exc)
                continue
            queues = self._channel.typeof(message.exchange).lookup(
                self._channel.get_table(message.exchange), message.exchange,
                message.routing_key, None) if message.exchange in self._exchanges() else []
            if not queues:
                outcomes.append(UnroutableError(
                    f"no queue takes message type {message.routing_key!r} on "
                    f"{message.exchange}", envelope_id=message.envelope.id,
                    hint="add a route whose 'from' matches this type, or fix the type"))
                continue
            self._put(message.exchange, message.routing_key, message.envelope,
                      dict(message.headers))
            outcomes.append(None)
        return outcomes

    def _exchanges(self) -> Any:
        return self._channel.state.exchanges

    def _put(self, exchange: str, routing_key: str, envelope: Envelope,
             headers: dict[str, Any]) -> None:
        headers[ATTEMPT_HEADER] = envelope.attempt
        self._producer.publish(envelope.to_json(), exchange=exchange, routing_key=routing_key,
                               content_type="application/json", content_encoding="utf-8",
                               headers=headers, delivery_mode=2, message_id=envelope.id)

    def publish(self, envelope: Envelope) -> None:
        (outcome,) = self.send([Outgoing.ingress(envelope)])
        if outcome is not None:
            raise outcome

    def publish_many(self, envelopes: Sequence[Envelope]) -> list[BusError | None]:
        return self.send([Outgoing.ingress(e) for e in envelopes])

    def retry_later(self, route: str, envelopes: Sequence[Envelope],
                    delay_ms: int) -> list[BusError | None]:
        for envelope in envelopes:
            self._transport.broker.delay(route, envelope, delay_ms)
        return [None] * len(envelopes)

    def release_due(self) -> None:
        for route, envelope in self._transport.broker.take_due():
            self._put(REQUEUE_EXCHANGE, route, envelope, {})

    def close(self) -> None:
        self._conn.release()


class MemoryConsumer:
    """Consumes embedded queues; each fetch also releases retries whose delay is over."""

    def __init__(self, transport: MemoryTransport, queues: Sequence[str], prefetch: int) -> None:
        self._conn = transport.connect()
        self._channel = self._conn.channel()
        self._releaser = MemoryPublisher(transport)
        self._buffer: list[Delivery] = []
        self._consumers: dict[str, Any] = {}
        self._prefetch = prefetch
        for name in queues:
            self._consume(name)

    def _consume(self, name: str) -> None:
        consumer = Consumer(self._channel, queues=[Queue(name, no_declare=True)],
                            on_message=self._receiver(name), auto_declare=False,
                            prefetch_count=self._prefetch)
        consumer.consume()
        self._consumers[name] = consumer

    def _receiver(self, queue: str) -> Any:
        def receive(message: Any) -> None:
            self._buffer.append(Delivery(
                body=message.body, queue=queue,
                redelivered=bool(message.delivery_info.get("redelivered")), delivery_count=0,
                headers=message.headers or {}, tag=message.delivery_tag, raw=message))
        return receive

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            self._releaser.release_due()
            try:
                while len(self._buffer) < max_count:
                    self._conn.drain_events(timeout=0)
            except (TimeoutError, OSError):
                pass
            if self._buffer or time.monotonic() >= deadline:
                break
            time.sleep(min(self._conn.transport.polling_interval,
                           max(0.0, deadline - time.monotonic())))
        batch, self._buffer = self._buffer[:max_count], self._buffer[max_count:]
        return batch

    def stop_consuming(self) -> None:
        for consumer in self._consumers.values():
            consumer.cancel()
        self._consumers.clear()

    def pause(self, queue: str) -> None:
        consumer = self._consumers.pop(queue, None)
        if consumer is not None:
            consumer.cancel()

    def resume(self, queue: str) -> None:
        if queue not in self._consumers:
            self._consume(queue)

    def keepalive(self, timeout: float) -> None:
        """Nothing to keep alive in-process; just let the time pass."""
        threading.Event().wait(timeout)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            delivery.raw.ack()

    def set_prefetch(self, count: int) -> None:
        self._prefetch = count
        for consumer in self._consumers.values():
            consumer.qos(prefetch_count=count)

    def close(self) -> None:
        self._releaser.close()
        self._conn.release()
