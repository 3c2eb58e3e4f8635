"""RabbitMQ through kombu (py-amqp): declaration, windowed-confirm publishing, consuming.

This module is the boundary where kombu/py-amqp exceptions become bus errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from itertools import takewhile
from typing import Any

from amqp.exceptions import AccessRefused, NotAllowed
from kombu import Exchange, Queue, binding
from kombu.exceptions import OperationalError as KombuOperationalError

from integration_bus.envelope import MAX_MESSAGE_BYTES, Envelope
from integration_bus.errors import (
    BrokerUnavailable,
    BusError,
    ConfigError,
    PublishNacked,
    UnpublishableError,
    UnroutableError,
)
from integration_bus.topology import (
    ATTEMPT_HEADER,
    DEAD_EXCHANGE,
    DEAD_LETTER_QUEUE,
    INGRESS_EXCHANGE,
    REQUEUE_EXCHANGE,
    RETRY_EXCHANGE,
    RETRY_TIER_HEADER,
    Topology,
    format_delay,
    retry_queue,
)
from integration_bus.transport.amqp_consume import AmqpConsumer
from integration_bus.transport.amqp_frames import publish_frames
from integration_bus.transport.amqp_io import Connection, corked
from integration_bus.transport.base import IngressPublishing, Outgoing, QueueStats

__all__ = ["AmqpConsumer", "AmqpPublisher", "AmqpTransport"]

CONFIRM_TIMEOUT = 30.0  # seconds a publish may wait for its confirm before it counts as failed
_PRECONDITION_FAILED = 406
_NOT_FOUND = 404


def _nothing() -> None:
    pass


class AmqpTransport:
    """RabbitMQ at ``url``. Every publisher and consumer opens its own connection.

    ``url`` may list the nodes of a cluster separated by ``;`` (kombu's failover URLs): each
    new connection tries them in ``failover_strategy`` order (``round-robin``: as listed;
    ``shuffle``) until one answers, so a publisher or consumer that lost its node reconnects
    to another one. With quorum queues every node serves every queue.
    """

    embedded = False

    def __init__(self, url: str, *, heartbeat: int = 30, connect_timeout: float = 10.0,
                 confirm_window: int = 512, max_message: int = MAX_MESSAGE_BYTES,
                 failover_strategy: str = "round-robin") -> None:
        self.url = url
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.confirm_window = confirm_window
        self.max_message = max_message
        self.failover_strategy = failover_strategy
        self.nodes = len([part for part in url.split(";") if part.strip()])
        self.topology: Topology | None = None
        probe = Connection(url)
        #: every kombu/py-amqp error that means "the connection or channel is gone"
        self.errors: tuple[type[BaseException], ...] = (
            *probe.connection_errors, *probe.channel_errors, OSError)

    def connect(self) -> Connection:
        """A connected kombu Connection. BrokerUnavailable if the broker cannot be reached, or
        refuses the login or the vhost (``reason="access_refused"``: one line naming user and
        broker, password masked; a running bus keeps retrying, as an operator may fix the user).
        """
        conn = Connection(self.url, heartbeat=self.heartbeat,
                          connect_timeout=self.connect_timeout,
                          failover_strategy=self.failover_strategy)
        try:
            # Each node once, without sleeping in between (kombu sleeps only after a full
            # round); if none answers, fail at once: callers own the backoff.
            conn.ensure_connection(max_retries=self.nodes - 1)
        except (AccessRefused, NotAllowed) as exc:
            where = conn.as_uri()  # the password masked as **
            conn.release()
            what = "the login of user" if isinstance(exc, AccessRefused) else "access for user"
            said = " ".join(str(getattr(exc, "reply_text", "") or exc).split())
            raise BrokerUnavailable(
                f"the broker at {where} refused {what} {conn.userid!r} ({said}): check the "
                "user, password and vhost in the broker URL (broker.url / BUS_BROKER_URL)",
                reason="access_refused") from exc
        except (*conn.connection_errors, KombuOperationalError, OSError) as exc:
            conn.release()
            raise BrokerUnavailable(f"cannot connect to the broker: {exc}") from exc
        return conn

    def declare(self, topology: Topology) -> None:
        """Declare exchanges and queues (at start-up). ConfigError when the broker refuses
        the credentials: at start that is the configuration's fault, not an outage."""
        self.topology = topology
        try:
            conn = self.connect()
        except BrokerUnavailable as exc:
            if exc.context.get("reason") == "access_refused":
                raise ConfigError(exc.message, field="broker.url") from exc
            raise
        try:
            channel = conn.channel()
            ingress = Exchange(INGRESS_EXCHANGE, "topic", durable=True)
            dead = Exchange(DEAD_EXCHANGE, "fanout", durable=True)
            retry = Exchange(RETRY_EXCHANGE, "headers", durable=True)
            requeue = Exchange(REQUEUE_EXCHANGE, "direct", durable=True)
            queues = [Queue(DEAD_LETTER_QUEUE, exchange=dead, routing_key="", durable=True,
                            queue_arguments=topology.dead_letter_queue_arguments())]
            for route in topology.routes:
                bindings = [binding(ingress, routing_key=p) for p in route.patterns]
                bindings.append(binding(requeue, routing_key=route.route))
                queues.append(Queue(route.queue, bindings=bindings, durable=True,
                                    queue_arguments=route.queue_arguments()))
            for tier_ms in topology.retry_tiers_ms:
                label = format_delay(tier_ms)
                queues.append(Queue(
                    retry_queue(tier_ms), durable=True,
                    bindings=[binding(retry, arguments={"x-match": "all",
                                                        RETRY_TIER_HEADER: label})],
                    queue_arguments=topology.retry_queue_arguments(tier_ms)))
            for exchange in (ingress, dead, retry, requeue):
                exchange(channel).declare()
            for queue in queues:
                try:
                    queue(channel).declare()
                except conn.channel_errors as exc:
                    if getattr(exc, "reply_code", None) == _PRECONDITION_FAILED:
                        raise ConfigError(
                            f"queue {queue.name} exists on the broker with other arguments: "
                            f"{exc}", field="routes",
                            hint="drain and delete the queue (rabbitmqctl delete_queue), or "
                                 "keep the old delivery_limit/retry tiers") from exc
                    raise
        except self.errors as exc:
            raise BrokerUnavailable(f"declaring the topology failed: {exc}") from exc
        finally:
            conn.release()

    def publisher(self) -> AmqpPublisher:
        return AmqpPublisher(self)

    def consumer(self, queues: Sequence[str], prefetch: int) -> AmqpConsumer:
        return AmqpConsumer(self.connect, self.errors, queues, prefetch)

    def queue_stats(self, queue: str) -> QueueStats | None:
        conn = self.connect()
        try:
            channel = conn.channel()
            try:
                _, messages, consumers = channel.queue_declare(queue, passive=True)
            except conn.channel_errors as exc:
                if getattr(exc, "reply_code", None) == _NOT_FOUND:
                    return None
                raise
            return QueueStats(messages=messages, consumers=consumers)
        except self.errors as exc:
            raise BrokerUnavailable(f"queue stats failed: {exc}") from exc
        finally:
            conn.release()

    def queue_depths(self, queues: Sequence[str]) -> dict[str, QueueStats | None]:
        """:meth:`queue_stats` of several queues over one connection (what a scrape reads)."""
        out: dict[str, QueueStats | None] = {}
        conn = self.connect()
        try:
            channel = conn.channel()
            for queue in queues:
                try:
                    _, messages, consumers = channel.queue_declare(queue, passive=True)
                    out[queue] = QueueStats(messages=messages, consumers=consumers)
                except conn.channel_errors as exc:
                    if getattr(exc, "reply_code", None) != _NOT_FOUND:
                        raise
                    out[queue] = None
                    channel = conn.channel()  # the broker closed the one that asked
            return out
        except self.errors as exc:
            raise BrokerUnavailable(f"queue stats failed: {exc}") from exc
        finally:
            conn.release()

    def retry_waiting(self) -> int:
        tiers = self.topology.retry_tiers_ms if self.topology else ()
        stats = [self.queue_stats(retry_queue(ms)) for ms in tiers]
        return sum(s.messages for s in stats if s is not None)

    def close(self) -> None:
        """Nothing to release: connections belong to publishers and consumers."""


class AmqpPublisher(IngressPublishing):
    """Windowed publisher confirms on one channel (py-amqp ``confirm_select`` + callbacks).

    Up to ``confirm_window`` messages are unconfirmed at a time. Outcomes are settled by the
    broker's basic.ack/nack; a basic.return (mandatory, unroutable) arriving before the ack
    turns that message's outcome into UnroutableError.
    """

    def __init__(self, transport: AmqpTransport) -> None:
        self._transport = transport
        self._conn: Connection | None = None
        self._channel: Any = None
        self._seq = 0
        self._pending: dict[int, int] = {}  # publish seq -> index in current send()
        self._pending_ids: dict[str, list[int]] = {}  # message id -> seqs (for returns)
        self._returned: set[int] = set()
        self._outcomes: list[BusError | object | None] = []
        self._last_used = time.monotonic()
        self._flush: Callable[[], None] = _nothing

    # -- connection ----------------------------------------------------------------------------
    def _ensure(self) -> None:
        idle = time.monotonic() - self._last_used
        heartbeat = self._transport.heartbeat
        if self._channel is not None and heartbeat and idle > heartbeat:
            # Nobody served this connection's heartbeats while it was idle: the broker has
            # probably closed it, and a publish on it would fail. Start a fresh one.
            self._reset()
        if self._channel is not None:
            try:
                self._conn.heartbeat_check()  # type: ignore[union-attr]
                return
            except self._transport.errors:
                self._reset()
        conn = self._transport.connect()
        try:
            channel = conn.channel()
            channel.confirm_select()
        except self._transport.errors as exc:
            conn.release()
            raise BrokerUnavailable(f"cannot open a confirm channel: {exc}") from exc
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        self._conn, self._channel, self._seq = conn, channel, 0
        amqp_conn = conn.connection
        self._amqp, self._write = amqp_conn, amqp_conn.transport.write

    def _reset(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # already broken; nothing to save
                pass

    # -- broker callbacks ------------------------------------------------------------------------
    def _settle(self, tag: int, multiple: bool, error: BusError | None) -> None:
        # _pending is in publish order: what a multiple confirm settles is at its front
        seqs = list(takewhile(lambda s: s <= tag, self._pending)) if multiple else [tag]
        for seq in seqs:
            index = self._pending.pop(seq, None)
            if index is None:
                continue
            returned = seq in self._returned
            self._returned.discard(seq)
            if returned and error is None:
                self._outcomes[index] = self._unroutable(index)
            else:
                self._outcomes[index] = error

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, None)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, PublishNacked("the broker nacked the publish"))

    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        message_id = message.properties.get("message_id")
        for seq in self._pending_ids.get(message_id, ()):
            if seq in self._pending and seq not in self._returned:
                self._returned.add(seq)
                return

    def _unroutable(self, index: int) -> UnroutableError:
        msg = self._batch[index]
        return UnroutableError(
            f"no queue takes message type {msg.routing_key!r} on {msg.exchange}",
            envelope_id=msg.envelope.id,
            hint="add a route whose 'from' matches this type, or fix the type")

    # -- publishing ------------------------------------------------------------------------------
    def send(self, messages: Sequence[Outgoing]) -> list[BusError | None]:
        unsettled = object()
        self._batch = list(messages)
        self._outcomes = [unsettled] * len(messages)
        self._pending.clear()
        self._pending_ids.clear()
        self._returned.clear()
        try:
            self._ensure()
            # Frames are gathered and sent once per window (or 128 KB), not once per message;
            # _wait_one sends them before it waits for their confirms.
            with corked(self._conn) as self._flush:
                self._stream(messages)
        except BusError as exc:
            self._fail_unsettled(unsettled, exc)
        except self._transport.errors as exc:
            self._fail_unsettled(unsettled, BrokerUnavailable(f"broker connection lost: {exc}"))
        outcomes = self._outcomes
        self._outcomes = []
        self._last_used = time.monotonic()
        return outcomes  # type: ignore[return-value]

    def _stream(self, messages: Sequence[Outgoing]) -> None:
        window = self._transport.confirm_window
        for index, message in enumerate(messages):
            try:  # one that cannot travel fails alone, before the broker sees it
                body = message.envelope.encode(self._transport.max_message)
            except UnpublishableError as exc:
                self._outcomes[index] = exc
                continue
            while len(self._pending) >= window:
                self._wait_one()
            self._publish(index, message, body)
        while self._pending:
            self._wait_one()

    def _fail_unsettled(self, unsettled: object, error: BusError) -> None:
        for index, outcome in enumerate(self._outcomes):
            if outcome is unsettled:
                self._outcomes[index] = error
        self._pending.clear()
        self._reset()  # sequence numbers are unknown now: start a fresh channel

    def _publish(self, index: int, message: Outgoing, body: bytes) -> None:
        envelope = message.envelope
        # Few properties on purpose: the body already holds type, correlation and time. The
        # id is kept for returns and archiving. The frames are built here, not by py-amqp's
        # basic_publish (transport/amqp_frames.py says why); the channel is in confirm mode,
        # so the broker numbers them as counted in _seq.
        headers = ({ATTEMPT_HEADER: envelope.attempt, **message.headers}
                   if message.headers or envelope.attempt else None)
        try:
            frames = publish_frames(self._channel.channel_id, message.exchange,
                                    message.routing_key, body, message_id=envelope.id,
                                    headers=headers, frame_max=self._amqp.frame_max)
        except ValueError as exc:  # an exchange or routing key over 255 bytes
            self._outcomes[index] = UnpublishableError(
                f"cannot publish envelope {envelope.id}: {exc}", envelope_id=envelope.id)
            return
        self._seq += 1
        self._pending[self._seq] = index
        self._pending_ids.setdefault(envelope.id, []).append(self._seq)
        self._write(frames)
        self._amqp.bytes_sent += 1  # what py-amqp's heartbeat check counts as "sent something"

    def _wait_one(self) -> None:
        self._flush()  # what is still gathered must reach the broker before we wait for it
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        before = len(self._pending)
        while len(self._pending) == before:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerUnavailable(f"no publisher confirm within {CONFIRM_TIMEOUT:.0f} s")
            try:
                self._conn.drain_events(timeout=min(remaining, 1.0))  # type: ignore[union-attr]
            except TimeoutError:
                self._conn.heartbeat_check()  # type: ignore[union-attr]

    def retry_later(self, route: str, envelopes: Sequence[Envelope],
                    delay_ms: int) -> list[BusError | None]:
        label = format_delay(delay_ms)
        return self.send([Outgoing(RETRY_EXCHANGE, route, e, {RETRY_TIER_HEADER: label})
                          for e in envelopes])

    def close(self) -> None:
        self._reset()
