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


def _received(peer: socket.socket) -> bytes:
    peer.setblocking(False)
    data = b""
    try:
        while chunk := peer.recv(1 << 20):
            data += chunk
    except BlockingIOError:
        pass
    return data


def test_a_corked_transport_sends_gathered_frames_on_flush_in_order(
        pair: tuple[BufferedTCPTransport, socket.socket]) -> None:
    transport, peer = pair
    frames = [frame(1, 1, f"publish {i}".encode()) for i in range(50)]
    transport.cork()
    scratch = bytearray(64)
    for data in frames:  # py-amqp hands a view of one buffer it reuses for every frame
        scratch[:len(data)] = data
        transport.write(memoryview(scratch)[:len(data)])
    assert _received(peer) == b""  # nothing sent yet
    transport.flush()
    assert _received(peer) == b"".join(frames)
    transport.write(frames[0])
    transport.uncork()  # sends the rest, then writes go straight out again
    transport.write(frames[1])
    assert _received(peer) == frames[0] + frames[1]


def test_a_corked_transport_sends_once_it_gathered_write_size(
        pair: tuple[BufferedTCPTransport, socket.socket]) -> None:
    transport, peer = pair
    big = frame(3, 1, b"z" * 40_000)
    transport.cork()
    got = b""
    for _ in range(4):  # 160 KB: past WRITE_SIZE after the fourth
        transport.write(big)
        got += _received(peer)
    assert got == big * 4
    transport.uncork()


def test_a_whole_frame_in_the_buffer_is_read_without_touching_the_socket_timeout(
        pair: tuple[BufferedTCPTransport, socket.socket]) -> None:
    transport, peer = pair
    third = frame(1, 1, b"third")
    peer.sendall(frame(1, 1, b"first") + frame(1, 1, b"second") + third[:-3])
    with transport.having_timeout(5.0):
        assert transport.read_frame() == (1, 1, b"first")  # one recv took all three
    assert transport.sock.gettimeout() is None
    timeouts: list[float | None] = []
    with transport.having_timeout(5.0) as sock:  # "second" is whole in the buffer
        timeouts.append(sock.gettimeout())
        assert transport.read_frame() == (1, 1, b"second")
    assert timeouts == [None]
    with transport.having_timeout(0.05) as sock:  # the third is cut short: the socket waits
        timeouts.append(sock.gettimeout())
        with pytest.raises(socket.timeout):
            transport.read_frame()
    assert timeouts == [None, 0.05]
    peer.sendall(third[-3:])
    assert transport.read_frame() == (1, 1, b"third")
