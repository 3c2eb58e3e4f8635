"""The hot path's own AMQP framing (transport/amqp_frames.py) checked against py-amqp's: frames we
build are read by py-amqp's frame handler as the publish we meant, and deliveries py-amqp's
frame writer builds are read by ours as py-amqp would read them; everything else still reaches
py-amqp. Then the same over a real RabbitMQ: a body larger than a frame, headers, ids;
deliveries read ahead into the consumer's buffer."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from struct import unpack_from
from types import SimpleNamespace
from typing import Any

import pytest
from amqp.basic_message import Message
from amqp.method_framing import frame_handler, frame_writer
from amqp.serialization import decode_properties_basic, dumps, loads

from integration_bus.envelope import Envelope
from integration_bus.errors import BrokerUnavailable
from integration_bus.topology import ATTEMPT_HEADER, RouteBinding, Topology, route_queue
from integration_bus.transport.amqp import AmqpPublisher, AmqpTransport
from integration_bus.transport.amqp_consume import AmqpConsumer
from integration_bus.transport.amqp_frames import Deliver, publish_frames, route_deliveries
from integration_bus.transport.base import Delivery

FRAME_MAX = 4096


def split_frames(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    offset = 0
    while offset < len(data):
        frame_type, channel, size = unpack_from(">BHI", data, offset)
        payload = data[offset + 7:offset + 7 + size]
        assert data[offset + 7 + size] == 0xCE
        yield frame_type, channel, bytes(payload)
        offset += size + 8


def read_with_pyamqp(data: bytes) -> list[tuple[int, tuple[int, int], bytes, Any]]:
    connection = SimpleNamespace(bytes_recv=0)
    got: list[tuple[int, tuple[int, int], bytes, Any]] = []
    handle = frame_handler(connection, lambda ch, sig, args, msg: got.append((ch, sig, args, msg)),
                           content_methods=frozenset({(60, 40)}))  # a broker's reading
    for frame in split_frames(data):
        handle(frame)
    return got


@pytest.mark.parametrize("size", [0, 10, FRAME_MAX - 8, FRAME_MAX - 7, 3 * FRAME_MAX + 5])
@pytest.mark.parametrize("headers", [None, {ATTEMPT_HEADER: 2, "x-retry-tier": "5s", "n": None}])
def test_publish_frames_read_by_pyamqp(size: int, headers: dict[str, Any] | None) -> None:
    body = bytes(i % 251 for i in range(size))
    data = publish_frames(3, "bus.ingress", "sale.recorded.ünïcode", body, message_id="01ABC",
                          headers=headers, frame_max=FRAME_MAX)
    frames = list(split_frames(data))
    assert all(len(payload) <= FRAME_MAX - 8 for _, _, payload in frames)
    [(channel, sig, args, msg)] = read_with_pyamqp(data)
    assert (channel, sig) == (3, (60, 40))
    (_, exchange, routing_key, mandatory, immediate), _ = loads("Bssbb", args, 4)
    assert (exchange, routing_key, mandatory, immediate) == (
        "bus.ingress", "sale.recorded.ünïcode", True, False)
    assert (msg.body or b"") == body  # py-amqp gives an empty body as ""
    assert msg.properties["delivery_mode"] == 2
    assert msg.properties["message_id"] == "01ABC"
    assert msg.properties["content_type"] == "application/json"
    assert msg.properties.get("application_headers") == headers


def test_a_name_longer_than_a_short_string_is_refused() -> None:
    with pytest.raises(ValueError, match="255 bytes"):
        publish_frames(1, "", "x" * 256, b"{}", message_id="1", headers=None,
                       frame_max=FRAME_MAX)


def deliver_frames(channel: int, tag: int, body: bytes, *, redelivered: bool = False,
                   headers: dict[str, Any] | None = None) -> list[tuple[int, int, bytes]]:
    """A basic.deliver as py-amqp's own frame writer builds it."""
    out = bytearray()
    connection = SimpleNamespace(frame_max=FRAME_MAX, bytes_sent=0)
    write = frame_writer(connection, SimpleNamespace(write=out.extend))
    message = Message(body, content_type="application/json", application_headers=headers,
                      delivery_mode=2, message_id=f"id-{tag}")
    write(1, channel, (60, 60),
          dumps("sLbss", (f"ctag-{channel}", tag, redelivered, "ex", "rk")), message)
    return list(split_frames(bytes(out)))


def test_deliveries_read_off_the_wire_and_everything_else_left_to_pyamqp() -> None:
    other: list[tuple[int, int, bytes]] = []

    def fallback(frame: tuple[int, int, bytes]) -> bool:
        other.append(frame)
        return True

    connection = SimpleNamespace(bytes_recv=0, on_inbound_frame=fallback)
    got: list[Deliver] = []
    route_deliveries(connection, 2, got.append)
    big = bytes(range(256)) * 50  # several body frames
    frames = [
        *deliver_frames(2, 1, b'{"a":1}'),
        (8, 0, b""),  # a heartbeat
        *deliver_frames(1, 7, b"another channel's"),  # not ours: py-amqp's
        *deliver_frames(2, 2, big, redelivered=True, headers={"x-delivery-count": 3}),
        (1, 2, b"\x00\x3c\x00\x15" + b"\x00"),  # basic.consume-ok on our channel: py-amqp's
        *deliver_frames(2, 3, b""),  # an empty body: whole with its header
    ]
    answers = [connection.on_inbound_frame(frame) for frame in frames]
    assert [(d.delivery_tag, d.redelivered, d.body, d.consumer_tag) for d in got] == [
        (1, False, b'{"a":1}', "ctag-2"), (2, True, big, "ctag-2"), (3, False, b"", "ctag-2")]
    assert got[1].properties["application_headers"] == {"x-delivery-count": 3}
    assert got[0].properties["message_id"] == "id-1"
    assert (got[0].exchange, got[0].routing_key) == ("ex", "rk")
    assert [f[0:2] for f in other] == [(8, 0), (1, 1), (2, 1), (3, 1), (1, 2)]
    assert answers.count(True) == 3 + len(other)  # each whole delivery, and py-amqp's answers


@pytest.mark.parametrize("properties", [
    {"content_type": "application/json", "delivery_mode": 2, "message_id": "01ABC"},  # the bus's
    {"content_type": "tëxt", "delivery_mode": 1, "message_id": ""},  # same flags, odd values
    {"content_type": "application/json", "delivery_mode": 2, "message_id": "ïd-é"},
    {"content_type": "application/json", "delivery_mode": 2, "message_id": "x",
     "application_headers": {"x-delivery-count": 2}},
    {"content_type": "text/plain", "message_id": "only two"},
    {"delivery_mode": 2, "message_id": "m", "priority": 5, "timestamp": 1700000000},
    {},
])
def test_a_deliverys_properties_read_as_pyamqp_reads_them(properties: dict[str, Any]) -> None:
    out = bytearray()
    write = frame_writer(SimpleNamespace(frame_max=FRAME_MAX, bytes_sent=0),
                         SimpleNamespace(write=out.extend))
    write(1, 1, (60, 60), dumps("sLbss", ("ctag", 1, False, "ex", "rk")),
          Message(b"{}", **properties))
    [(_, _, method), (_, _, header), _body] = split_frames(bytes(out))
    delivery = Deliver(method)
    delivery.header(header)
    assert delivery.properties == decode_properties_basic(header, 12)[0] == properties


@contextmanager
def route_io(url: str, route: str,
             prefetch: int) -> Iterator[tuple[AmqpPublisher, AmqpConsumer]]:
    """A publisher and a consumer of route ``route`` (messages typed ``<route>.…``)."""
    transport = AmqpTransport(url, connect_timeout=5.0)
    transport.declare(Topology(routes=(RouteBinding(route=route, patterns=(f"{route}.#",),
                                                    delivery_limit=5),), retry_tiers_ms=(100,)))
    publisher = transport.publisher()
    consumer = transport.consumer([route_queue(route)], prefetch)
    try:
        yield publisher, consumer
    finally:
        consumer.close()
        publisher.close()
        transport.close()


@pytest.mark.rabbitmq
def test_large_envelopes_and_retry_headers_cross_rabbitmq(rabbitmq_url: str) -> None:
    with route_io(rabbitmq_url, "frames", 10) as (publisher, consumer):
        envelopes = [Envelope.create("frames.big", {"blob": "é" * 400_000}, source="t"),
                     Envelope.create("frames.small", {"n": 1}, source="t")]
        assert publisher.publish_many(envelopes) == [None, None]
        assert publisher.retry_later("frames", [envelopes[1].next_attempt()], 100) == [None]
        got: list[Delivery] = []
        while len(got) < 3:
            got += consumer.fetch(3 - len(got), 5.0)
        consumer.ack(got)
        by_id = {(d.message_id, Envelope.from_json(d.body).attempt): d for d in got}
        big = by_id[envelopes[0].id, 0]
        assert Envelope.from_json(big.body) == envelopes[0]
        retried = by_id[envelopes[1].id, 1]
        assert retried.headers[ATTEMPT_HEADER] == 1
        assert not retried.redelivered


@pytest.mark.rabbitmq
def test_read_ahead_buffers_what_the_broker_sent_and_fetch_hands_it_out(
        rabbitmq_url: str) -> None:
    # The lane reads the next batch this way while a sink call waits for its broker.
    with route_io(rabbitmq_url, "ahead", 20) as (publisher, consumer):
        envelopes = [Envelope.create("ahead.one", {"n": n}, source="t") for n in range(20)]
        # one of them spans many frames: slices of 0.5 ms end in the middle of some
        envelopes[7] = Envelope.create("ahead.big", {"blob": "é" * 400_000}, source="t")
        assert publisher.publish_many(envelopes) == [None] * 20
        # Given 20 deliveries on their way, read ahead until 20 are buffered
        deadline = time.monotonic() + 10
        while consumer.read_ahead(20, 0.0005):
            assert time.monotonic() < deadline, "the deliveries never arrived"
        # Then the next fetch hands them out without waiting, whole and in order, and one
        # more read ahead has nothing to do until they are handed out
        assert not consumer.read_ahead(20, 0.05)
        got = consumer.fetch(20, 0)
        assert [d.message_id for d in got] == [e.id for e in envelopes]
        assert Envelope.from_json(got[7].body) == envelopes[7]
        consumer.ack(got)
        # When the connection breaks, read_ahead says so by returning False, never raising;
        # the next fetch reports it
        consumer._conn.connection.transport.sock.shutdown(socket.SHUT_RDWR)
        assert not consumer.read_ahead(20, 0.05)
        with pytest.raises(BrokerUnavailable):
            consumer.fetch(20, 1.0)
