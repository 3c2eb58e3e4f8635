"""Consuming RabbitMQ queues through kombu: one channel for several queues, deliveries buffered
and handed out in batches, pause/resume per queue, acks, prefetch changes.

Split from :mod:`.amqp` (the transport and its publisher), which builds it with its
``connect`` and the errors that mean "the connection or channel is gone".
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from kombu import Consumer, Queue

from integration_bus.errors import BrokerUnavailable
from integration_bus.transport.amqp_frames import Deliver, route_deliveries
from integration_bus.transport.amqp_io import BufferedTCPTransport, Connection
from integration_bus.transport.base import Delivery

__all__ = ["KEEP_CANCELLED", "WAKE_LESS_WAIT", "AmqpConsumer"]

KEEP_CANCELLED = 60.0  # seconds a cancelled consumer's tag still takes late deliveries
#: s a read ahead waits at most on a transport that cannot watch wake-up descriptors (TLS)
WAKE_LESS_WAIT = 0.0005


def _never(message: Any) -> None:
    raise AssertionError("deliveries are routed by amqp_frames.route_deliveries")


class AmqpConsumer:
    """Consumes several queues on one channel; deliveries are buffered, then handed out in
    batches by :meth:`fetch` (so no handler ever runs inside a broker callback)."""

    def __init__(self, connect: Callable[[], Connection],
                 errors: tuple[type[BaseException], ...], queues: Sequence[str],
                 prefetch: int) -> None:
        self._errors = errors
        self._queues = list(queues)
        self._conn: Any = connect()  # None once closed
        self._buffer: deque[Delivery] = deque()
        self._consumers: dict[str, Consumer] = {}
        self._tags: dict[str, str] = {}  # consumer tag -> queue (cancelled ones kept a while)
        self._cancelled: dict[str, float] = {}  # consumer tag -> when it was cancelled
        self._prefetch = prefetch
        self._broken: Exception | None = None  # what a read ahead met (see read_ahead)
        self._wire: Any = None  # py-amqp's connection under self._conn
        try:
            self._channel = self._conn.channel()
            # Deliveries are read off the wire here, not through py-amqp's and kombu's
            # message objects (transport/amqp_frames.py says why).
            self._wire = self._conn.connection
            route_deliveries(self._wire, self._channel.channel_id, self._receive)
            self._consume(prefetch)
        except self._errors as exc:
            self._conn.release()
            raise BrokerUnavailable(f"cannot consume {', '.join(queues)}: {exc}") from exc

    def _consume(self, prefetch: int, queues: Sequence[str] | None = None) -> None:
        self._prefetch = prefetch
        for name in self._queues if queues is None else queues:
            consumer = Consumer(self._channel, queues=[Queue(name, no_declare=True)],
                                on_message=_never, auto_declare=False,
                                prefetch_count=prefetch)
            consumer.consume()
            self._consumers[name] = consumer
            for tag in consumer._active_tags.values():
                self._tags[tag] = name

    def _receive(self, message: Deliver) -> None:
        queue = self._tags.get(message.consumer_tag)
        if queue is None:  # a consumer this channel never started (or forgot): as py-amqp does
            self._channel.basic_reject(message.delivery_tag, requeue=True)
            return
        properties = message.properties
        headers = properties.get("application_headers") or {}
        self._buffer.append(Delivery(
            body=message.body, queue=queue, redelivered=message.redelivered,
            delivery_count=int(headers.get("x-delivery-count") or 0),
            headers=headers, tag=message.delivery_tag, raw=message,
            message_id=properties.get("message_id")))

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        self._check()
        self._forget_cancelled()
        deadline = time.monotonic() + timeout
        try:
            self._take_ready(max_count)  # what the socket holds already, without waiting
            while not self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._conn.heartbeat_check()
                    return []
                try:
                    self._conn.drain_events(timeout=min(remaining, 1.0))
                except TimeoutError:
                    self._conn.heartbeat_check()
            self._take_ready(max_count)
        except self._errors as exc:
            raise BrokerUnavailable(f"consumer connection lost: {exc}") from exc
        count = min(max_count, len(self._buffer))
        return [self._buffer.popleft() for _ in range(count)]

    def _take_ready(self, max_count: int, wait: float = 0.0, wake: Sequence[int] = ()) -> None:
        """Buffer the deliveries the socket holds (up to ``max_count``); when it holds too few,
        wait up to ``wait`` s once for more. On a buffered transport the frames are taken from
        its buffer in a loop, each handed to the connection's frame handler (the deliveries'
        own, ``amqp_frames.route_deliveries``, which passes every other frame to py-amqp), not
        through py-amqp's ``drain_events``: that costs a socket-timeout context, a header, a
        payload and a frame-end read per frame, three frames per message (docs/benchmarks.md,
        issue 16). The one wait also ends when a ``wake`` descriptor is readable; py-amqp's
        own transport (TLS) cannot watch them, and waits at most WAKE_LESS_WAIT then."""
        wire = self._wire  # the py-amqp connection (None once closed)
        transport = getattr(wire, "transport", None)
        if not isinstance(transport, BufferedTCPTransport):
            self._drain_ready(max_count, min(wait, WAKE_LESS_WAIT) if wake else wait)
            return
        handle = wire.on_inbound_frame
        buffer = self._buffer
        waited = wait <= 0  # the one wait for more is used up
        while len(buffer) < max_count:
            frame = transport.next_frame()
            if frame is not None:
                handle(frame)
            elif not transport.pull():
                if waited or not transport.pull(wait, wake):
                    return
                waited = True

    def _drain_ready(self, max_count: int, wait: float) -> None:
        """:meth:`_take_ready` through py-amqp (a TLS connection's transport)."""
        while len(self._buffer) < max_count:
            try:
                self._conn.drain_events(timeout=0)
            except TimeoutError:
                break
        if len(self._buffer) < max_count and wait > 0:
            try:
                self._conn.drain_events(timeout=wait)
            except TimeoutError:
                pass

    def read_ahead(self, max_count: int, wait: float, wake: Sequence[int] = ()) -> bool:
        """Parse the deliveries the socket holds into the buffer (up to ``max_count``), then
        wait up to ``wait`` s for more, or until a ``wake`` descriptor is readable. The lane
        calls it while a sink call of the previous batch waits for its broker, so the next
        :meth:`fetch` finds its batch read."""
        if self._conn is None or self._broken is not None or len(self._buffer) >= max_count:
            return False
        try:
            self._take_ready(max_count, wait, wake)
        except self._errors as exc:
            # py-amqp reads nothing more from a connection after such an error, without
            # raising it again: kept for the next fetch, ack or keepalive to raise, once the
            # batch whose sink call is under way is settled
            self._broken = BrokerUnavailable(f"consumer connection lost: {exc}")
            self._broken.__cause__ = exc
            return False
        except Exception as exc:  # e.g. the broker cancelled a consumer: raised there too
            self._broken = exc
            return False
        return len(self._buffer) < max_count

    def take_read(self, max_count: int) -> list[Delivery]:
        """Up to ``max_count`` of the deliveries already buffered, without reading the socket;
        none once a read ahead met a broken connection (the next fetch or ack raises it, and
        the broker redelivers them)."""
        if self._broken is not None:
            return []
        self._forget_cancelled()
        buffer = self._buffer
        return [buffer.popleft() for _ in range(min(max_count, len(buffer)))]

    def _check(self) -> None:
        broken = self._broken
        if broken is not None:
            raise broken.with_traceback(None)

    def stop_consuming(self, *, quiet: float = 0.3, limit: float = 10.0) -> None:
        """Stop the broker sending more, without leaving a delivery stranded: deliveries
        already under way land in the buffer (fetch them). Handling them instead of closing
        with them unacked keeps their delivery counts (quorum queues count every return).

        First read, acking nothing, until the connection stays quiet for ``quiet`` seconds
        (at most ``limit``): the consumers' prefetch windows are then full, or their queues
        empty, so the queue has nothing assigned to this channel that is not buffered. Only
        then basic.cancel. (Measured on RabbitMQ 3.10: a quorum queue that assigned messages
        to a consumer just before its cancel never sends them, and returns them when the
        channel closes, redelivered with their delivery count raised.) :meth:`_cancel` also
        keeps taking deliveries that arrive after the cancel-ok, which would otherwise be
        rejected back to the queue.
        """
        try:
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                try:
                    self._conn.drain_events(timeout=quiet)
                except TimeoutError:
                    break
            for consumer in self._consumers.values():
                self._cancel(consumer)
            self._consumers.clear()
        except self._errors as exc:
            raise BrokerUnavailable(f"cancel failed: {exc}") from exc

    def _cancel(self, consumer: Consumer) -> None:
        """basic.cancel, still taking the consumer's deliveries that arrive after the
        cancel-ok (quorum queues send some): they are buffered and handled like the others,
        rather than rejected back to the queue, which would count as a delivery. Kept
        tags are dropped a minute later (see :meth:`_forget_cancelled`)."""
        tags = list(consumer._active_tags.values())
        consumer.cancel()
        now = time.monotonic()
        for tag in tags:  # self._tags keeps the tag's queue
            self._cancelled[tag] = now

    def _forget_cancelled(self) -> None:
        """Forget the tags of consumers cancelled over a minute ago (a route paused and resumed
        every few seconds by a flapping breaker would otherwise pile them up)."""
        if not self._cancelled:
            return
        cutoff = time.monotonic() - KEEP_CANCELLED
        for tag, at in list(self._cancelled.items()):
            if at < cutoff:
                del self._cancelled[tag]
                self._tags.pop(tag, None)

    def pause(self, queue: str) -> None:
        """Stop consuming ``queue`` (its messages wait there) until :meth:`resume`."""
        consumer = self._consumers.pop(queue, None)
        if consumer is not None:
            try:
                self._cancel(consumer)
            except self._errors as exc:
                raise BrokerUnavailable(f"cancel failed: {exc}") from exc

    def resume(self, queue: str) -> None:
        if queue not in self._consumers:
            try:
                self._consume(self._prefetch, [queue])
            except self._errors as exc:
                raise BrokerUnavailable(f"cannot consume {queue}: {exc}") from exc

    def keepalive(self, timeout: float) -> None:
        """Serve the connection (heartbeats) for ``timeout`` s without handing anything out."""
        self._check()
        try:
            try:
                self._conn.drain_events(timeout=max(timeout, 0.01))
            except TimeoutError:
                pass
            self._conn.heartbeat_check()
        except self._errors as exc:
            raise BrokerUnavailable(f"consumer connection lost: {exc}") from exc

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        self._check()
        try:
            # Everything up to the highest tag was handled in order: one multiple-ack settles it.
            self._channel.basic_ack(max(d.tag for d in deliveries), multiple=True)
        except self._errors as exc:
            raise BrokerUnavailable(f"ack failed, the broker will redeliver: {exc}") from exc

    def set_prefetch(self, count: int) -> None:
        # basic.qos (per consumer) only applies to consumers started after it: cancel and
        # consume again. Unacked deliveries stay valid on the channel meanwhile.
        try:
            queues = list(self._consumers)
            for consumer in self._consumers.values():
                self._cancel(consumer)
            self._consumers.clear()
            self._consume(count, queues)
        except self._errors as exc:
            raise BrokerUnavailable(f"cannot change prefetch: {exc}") from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.release()
        except Exception:  # closing a broken connection
            pass
