"""The two AMQP 0-9-1 methods a route's hot path repeats per message, framed and parsed here
instead of by py-amqp: ``basic.publish`` (with its content) and ``basic.deliver`` (with its).

Why not py-amqp for these (docs/benchmarks.md, issue 16): a publish through
``Channel.basic_publish`` builds a ``Message``, serialises its method arguments and properties
through the generic ``dumps``, takes a lock, and first polls the socket for a
``connection.blocked`` notice (a ``recv`` that times out, per message); a delivery goes through
the generic frame handler, a ``Message`` object, ``dispatch_method``'s argument parsing and
kombu's message wrapper before it reaches the consumer. The frames of these two methods are
fixed in the spec (sections 1.8.3.7, 1.8.3.9 and 4.2.6 of AMQP 0-9-1); building them with
``struct`` is a few lines, and everything else on the connection (handshake, heartbeats, channel
and consumer set-up, confirms, returns, close) stays py-amqp's, which keeps reading and answering
every other frame.

Properties are encoded in flag order; the header table goes through py-amqp's own
``serialization.dumps('F', …)`` and ``decode_properties_basic`` reads a delivery's properties,
so the field-table codec is not written twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from struct import Struct
from typing import Any

from amqp.serialization import decode_properties_basic, dumps

__all__ = ["Deliver", "DeliveryHandler", "publish_frames", "route_deliveries"]

FRAME_END = b"\xce"
_FRAME_HEAD = Struct(">BHI")
_METHOD_HEAD = Struct(">HHH")  # class 60 (basic), method 40 (publish), reserved short
_CONTENT_HEAD = Struct(">HHQH")  # class 60, weight 0, body size, property flags
_DELIVER_SIG = b"\x00\x3c\x00\x3c"  # class 60, method 60 (basic.deliver)
_TAG = Struct(">QB")  # delivery tag, redelivered bit
_BODY_SIZE = Struct(">Q")

_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE, _MESSAGE_ID = 0x8000, 0x2000, 0x1000, 0x0080


def _shortstr(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"{value[:40]!r}…: longer than 255 bytes, too long for AMQP")
    return bytes((len(raw),)) + raw


@lru_cache(maxsize=1024)
def _method_frame(channel: int, exchange: str, routing_key: str, mandatory: bool) -> bytes:
    """The whole ``basic.publish`` method frame: the same for every message to one place."""
    method = (_METHOD_HEAD.pack(60, 40, 0) + _shortstr(exchange) + _shortstr(routing_key)
              + (b"\x01" if mandatory else b"\x00"))
    return _FRAME_HEAD.pack(1, channel, len(method)) + method + FRAME_END


def publish_frames(channel: int, exchange: str, routing_key: str, body: bytes, *,
                   message_id: str, headers: Mapping[str, Any] | None, frame_max: int,
                   content_type: str = "application/json", mandatory: bool = True) -> bytes:
    """The method, content-header and body frames of one persistent ``basic.publish``, as one
    ``bytes`` to write. Properties: content type, headers (when given), delivery mode 2,
    message id — what the bus publishes."""
    flags = _CONTENT_TYPE | _DELIVERY_MODE | _MESSAGE_ID
    props = _shortstr(content_type)
    if headers:
        flags |= _HEADERS
        props += dumps("F", [dict(headers)])
    props += b"\x02" + _shortstr(message_id)
    header = _CONTENT_HEAD.pack(60, 0, len(body), flags) + props
    parts = [_method_frame(channel, exchange, routing_key, mandatory),
             _FRAME_HEAD.pack(2, channel, len(header)), header, FRAME_END]
    chunk = frame_max - 8  # a body frame's payload: the frame size less its 8 bytes of framing
    for start in range(0, len(body), chunk):
        piece = body[start:start + chunk]
        parts += (_FRAME_HEAD.pack(3, channel, len(piece)), piece, FRAME_END)
    return b"".join(parts)


class Deliver:
    """One ``basic.deliver`` with its content, as read off the wire."""

    __slots__ = (
        "_parts",
        "_size",
        "body",
        "consumer_tag",
        "delivery_tag",
        "exchange",
        "properties",
        "redelivered",
        "routing_key",
    )

    def __init__(self, args: bytes) -> None:
        offset = 4
        size = args[offset]
        self.consumer_tag = args[offset + 1:offset + 1 + size].decode()
        offset += 1 + size
        self.delivery_tag, bits = _TAG.unpack_from(args, offset)
        self.redelivered = bool(bits & 1)
        offset += 9
        size = args[offset]
        self.exchange = args[offset + 1:offset + 1 + size].decode()
        offset += 1 + size
        size = args[offset]
        self.routing_key = args[offset + 1:offset + 1 + size].decode()
        self.properties: dict[str, Any] = {}
        self.body = b""
        self._parts: list[bytes] = []
        self._size = -1

    def header(self, payload: bytes) -> bool:
        """The content header; True when the message is whole (an empty body). The
        properties the bus publishes without headers (content type, delivery mode, message
        id: every first delivery of a message that was never retried) are read here, 0.4 µs
        where py-amqp's ``decode_properties_basic`` takes 1.1; any other set goes to it."""
        (self._size,) = _BODY_SIZE.unpack_from(payload, 4)
        if payload[12:14] == _PLAIN_FLAGS:
            self.properties = _plain_properties(payload)
        else:
            self.properties, _ = decode_properties_basic(payload, 12)
        return self._size == 0

    def part(self, payload: bytes) -> bool:
        """A body frame; True when the body is whole."""
        if not self._parts and len(payload) == self._size:
            self.body = payload  # the common case: the body in one frame, no copy
            return True
        self._parts.append(payload)
        if sum(len(p) for p in self._parts) < self._size:
            return False
        self.body = b"".join(self._parts)
        self._parts = []
        return True


_PLAIN_FLAGS = (_CONTENT_TYPE | _DELIVERY_MODE | _MESSAGE_ID).to_bytes(2, "big")


def _plain_properties(payload: bytes) -> dict[str, Any]:
    """The properties of a content header whose flags are ``_PLAIN_FLAGS``, at offset 14: as
    py-amqp reads them (short strings as UTF-8 with surrogates passed, the mode an int)."""
    end = 15 + payload[14]
    content_type = payload[15:end].decode("utf-8", "surrogatepass")
    mode, size = payload[end], payload[end + 1]
    return {"content_type": content_type, "delivery_mode": mode,
            "message_id": payload[end + 2:end + 2 + size].decode("utf-8", "surrogatepass")}


DeliveryHandler = Callable[[Deliver], None]


def route_deliveries(connection: Any, channel: int, handler: DeliveryHandler) -> None:
    """Make the py-amqp ``connection`` hand the deliveries of ``channel`` to ``handler`` as
    :class:`Deliver` objects; every other frame (of this channel too: consume-ok, cancel,
    close, qos-ok) still goes to py-amqp's own frame handler. Install it right after the
    channel opens, before anything is consumed on it."""
    fallback = connection.on_inbound_frame
    partial: list[Deliver] = []  # the delivery whose content is being read (at most one)

    def on_frame(frame: tuple[int, int, bytes]) -> bool:
        frame_type, channel_id, payload = frame
        if channel_id != channel:
            return bool(fallback(frame))
        if frame_type == 1:
            if payload[:4] != _DELIVER_SIG:
                return bool(fallback(frame))
            if partial:
                raise _unexpected("a method", "the content of a delivery")
            connection.bytes_recv += 1
            partial.append(Deliver(payload))
            return False
        if frame_type == 8:
            return bool(fallback(frame))
        if not partial:
            return bool(fallback(frame))
        connection.bytes_recv += 1
        message = partial[0]
        whole = message.header(payload) if frame_type == 2 else message.part(payload)
        if not whole:
            return False
        partial.clear()
        handler(message)
        return True

    connection.on_inbound_frame = on_frame


def _unexpected(got: str, expected: str) -> Exception:
    from amqp.exceptions import UnexpectedFrame

    return UnexpectedFrame(f"received {got} while expecting {expected}")  # type: ignore[no-any-return]
