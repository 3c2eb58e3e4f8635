"""Buffered py-amqp reads (transport/amqp_io.py): frames split anywhere, timeouts mid-frame, and
a real RabbitMQ connection consuming through it."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from kombu import Consumer, Exchange, Producer, Queue

from integration_bus.transport.amqp_io import BufferedTCPTransport, Connection


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


@pytest.fixture
def pair() -> Iterator[tuple[BufferedTCPTransport, socket.socket]]:
    ours, theirs = socket.socketpair()
    transport = BufferedTCPTransport("127.0.0.1:5672")
    transport.sock = ours
    transport._setup_transport()
    try:
        yield transport, theirs
    finally:
        ours.close()
        theirs.close()


def test_frames_arriving_in_any_pieces_are_read_whole_and_in_order(
        pair: tuple[BufferedTCPTransport, socket.socket]) -> None:
    transport, peer = pair
    frames = [frame(1, 1, b"method"), frame(2, 1, b"h" * 300), frame(3, 1, bytes(range(256)) * 40),
              frame(8, 0, b"")]
    stream = b"".join(frames)
    # sent in uneven pieces: a header split, several frames in one piece, a body split
    for start, end in ((0, 3), (3, 20), (20, 400), (400, len(stream))):
        peer.sendall(stream[start:end])
    got = [transport.read_frame() for _ in frames]
    assert got == [(1, 1, b"method"), (2, 1, b"h" * 300), (3, 1, bytes(range(256)) * 40),
                   (8, 0, b"")]
    assert transport._read_buffer == b""


def test_a_timeout_mid_frame_keeps_what_arrived_for_the_next_read(
        pair: tuple[BufferedTCPTransport, socket.socket]) -> None:
    transport, peer = pair
    first, second = frame(1, 1, b"a" * 100), frame(3, 2, b"b" * 5000)
    peer.sendall(first + second[:2500])
    assert transport.read_frame() == (1, 1, b"a" * 100)
    transport.sock.settimeout(0.05)
    with pytest.raises(socket.timeout):
        transport.read_frame()  # half the body is there, the rest is not
    peer.sendall(second[2500:])
    assert transport.read_frame() == (3, 2, b"b" * 5000)


def test_a_closed_peer_is_an_error_not_a_hang(
        pair: tuple[BufferedTCPTransport, socket.socket]) -> None:
    transport, peer = pair
    peer.sendall(frame(1, 1, b"x")[:5])
    peer.close()
    with pytest.raises(OSError, match="unexpectedly closed"):
        transport.read_frame()


@pytest.mark.rabbitmq
def test_a_real_connection_reads_through_the_buffer(rabbitmq_url: str) -> None:
    exchange = Exchange("amqp-io-test", type="direct", durable=False, auto_delete=True)
    queue = Queue("amqp-io-test", exchange, routing_key="k", durable=False, auto_delete=False)
    bodies = [f"message {i} ".encode() * (1 + i % 50) for i in range(3000)]
    with Connection(rabbitmq_url) as conn:
        conn.ensure_connection(max_retries=1)
        assert isinstance(conn.connection.transport, BufferedTCPTransport)
        channel = conn.channel()
        queue(channel).declare()
        producer = Producer(channel, exchange, routing_key="k", serializer=None)
        for body in bodies:
            producer.publish(body, content_type="application/octet-stream",
                             content_encoding="binary")
        received: list[bytes] = []
        consumer = Consumer(conn.channel(), [queue], accept=None,
                            callbacks=[lambda body, message: (received.append(message.body),
                                                              message.ack())])
        consumer.qos(prefetch_count=500)
        with consumer:
            while len(received) < len(bodies):
                conn.drain_events(timeout=10)
        queue(channel).delete()
    assert received == bodies
