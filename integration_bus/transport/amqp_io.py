"""Buffered socket reads for py-amqp: one ``recv`` for many frames instead of three per frame.

py-amqp's ``TCPTransport._read(n)`` asks the socket for exactly the bytes it needs next: the
7-byte frame header, the payload, the frame-end octet. A consumed message is three frames
(method, content header, body), so a worker spent nine ``recv`` calls and as many bytes
concatenations per message, the largest single cost in its profile (docs/benchmarks.md).
:class:`BufferedTCPTransport` reads up to :data:`READ_SIZE` bytes at once into a ``bytearray``
and hands out frames from it; everything else (timeouts, errors, writes) is py-amqp's own.

:class:`Connection` is a kombu ``Connection`` whose plain ``amqp://`` connections use it (TLS
connections keep py-amqp's SSL transport), including after a failover switch to another node.
"""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from struct import Struct
from typing import Any

import amqp.transport
import kombu
from kombu.transport import pyamqp

__all__ = ["READ_SIZE", "WRITE_SIZE", "BufferedTCPTransport", "Connection", "corked"]

READ_SIZE = 128 * 1024  # bytes asked of the socket per recv when the buffer runs dry
WRITE_SIZE = 128 * 1024  # bytes a corked transport gathers before it writes them anyway

_FRAME_HEAD = Struct(">BHI")  # type, channel, payload size
_FRAME_END = 0xCE


class BufferedTCPTransport(amqp.transport.TCPTransport):  # type: ignore[misc]
    """``TCPTransport`` whose reads take what the socket has (up to READ_SIZE) and keep the
    rest for the next frames. ``_read_buffer`` (which py-amqp's ``read_frame`` reads and
    rewrites when a read times out mid-frame) stays the unread bytes."""

    _buf: bytearray
    _pos: int
    _out: list[bytes] | None = None  # frames gathered while corked
    _out_size = 0

    def _setup_transport(self) -> None:
        super()._setup_transport()
        self._buf, self._pos = bytearray(), 0
        self._poll = select.poll()
        self._poll.register(self.sock, select.POLLIN)

    # -- reads in bulk: the frames the buffer holds, without a socket call each ---------------
    def pull(self, wait: float = 0.0, wake: Sequence[int] = ()) -> bool:
        """Append what the socket holds now to the buffer (one ``recv``), after waiting up to
        ``wait`` s for it to hold something, or for one of the ``wake`` descriptors to be
        readable (then False at once, unless the socket is readable too). False when it held
        nothing. The socket's own timeout is left alone (no ``fcntl`` pair as
        ``having_timeout`` costs)."""
        sock = self.sock
        if sock is None:  # closed under us: as py-amqp's own reads fail then
            raise OSError("the connection to the broker is closed")
        if wait > 0:
            if not wake:
                if not self._poll.poll(wait * 1000):
                    return False
            else:
                # poll, not select: a worker's descriptors may be numbered past FD_SETSIZE
                watch = select.poll()
                watch.register(sock, select.POLLIN)
                for fd in wake:
                    watch.register(fd, select.POLLIN)
                mine = sock.fileno()
                if not any(fd == mine for fd, _event in watch.poll(wait * 1000)):
                    return False
        try:
            if sock.gettimeout() is None:  # blocking mode, as py-amqp leaves it
                chunk = sock.recv(READ_SIZE, socket.MSG_DONTWAIT)
            else:
                with super().having_timeout(0):
                    chunk = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError, TimeoutError):  # nothing there yet
            return False
        except OSError:
            self.connected = False
            raise
        if not chunk:
            self.connected = False
            raise OSError("Server unexpectedly closed connection")
        buf = self._buf
        if self._pos:
            del buf[:self._pos]
            self._pos = 0
        buf += chunk
        return True

    def next_frame(self) -> tuple[int, int, bytes] | None:
        """The next whole frame in the buffer as py-amqp's ``read_frame`` returns it (type,
        channel, payload), or None when the buffer holds no whole frame (nothing is taken)."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 8:
            return None
        frame_type, channel, size = _FRAME_HEAD.unpack_from(buf, pos)
        end = pos + 7 + size
        if len(buf) <= end:
            return None
        if buf[end] != _FRAME_END:
            from amqp.exceptions import UnexpectedFrame

            raise UnexpectedFrame(f"Received frame_end {buf[end]:#04x} while expecting 0xce")
        payload = bytes(buf[pos + 7:end])
        if end + 1 == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end + 1
        return frame_type, channel, payload

    # -- writes: one send for many frames while a publisher streams --------------------------
    def cork(self) -> None:
        """Gather written frames (up to WRITE_SIZE bytes) instead of sending each at once,
        until :meth:`flush` or :meth:`uncork`. A publisher streaming a window of messages then
        costs the socket one ``sendall`` per window, not one per message."""
        if self._out is None:
            self._out, self._out_size = [], 0

    def flush(self) -> None:
        """Send what was gathered; the transport stays corked."""
        out = self._out
        if out:
            data = b"".join(out)
            out.clear()
            self._out_size = 0
            super().write(data)

    def uncork(self) -> None:
        """Send what was gathered and write every frame at once again."""
        try:
            self.flush()
        finally:
            self._out, self._out_size = None, 0

    def write(self, s: bytes) -> None:
        out = self._out
        if out is None:
            super().write(s)
            return
        out.append(bytes(s))  # py-amqp may hand a view of a buffer it reuses
        self._out_size += len(s)
        if self._out_size >= WRITE_SIZE:
            self.flush()

    @contextmanager
    def having_timeout(self, timeout: float | None) -> Iterator[Any]:
        """py-amqp sets the socket's timeout around every frame it waits for, and puts it back
        after: two ``fcntl`` calls each time. A frame already whole in the buffer needs no
        socket at all, so it is read without them."""
        if timeout is not None and self._frame_ready():
            yield self.sock
            return
        with super().having_timeout(timeout) as sock:
            yield sock

    def _frame_ready(self) -> bool:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 7:
            return False
        size = int.from_bytes(buf[pos + 3:pos + 7], "big")
        return len(buf) - pos >= size + 8

    @property
    def _read_buffer(self) -> bytes:
        buf = getattr(self, "_buf", None)
        return bytes(buf[self._pos:]) if buf else b""

    @_read_buffer.setter
    def _read_buffer(self, value: bytes) -> None:
        self._buf, self._pos = bytearray(value), 0

    def _read(self, n: int, initial: bool = False,
              _errnos: tuple[int, ...] = (errno.EAGAIN, errno.EINTR)) -> bytes:
        buf = self._buf
        while len(buf) - self._pos < n:
            try:
                chunk = self._quick_recv(max(READ_SIZE, n - (len(buf) - self._pos)))
            except OSError as exc:
                if exc.errno in _errnos:
                    if initial and self.raise_on_initial_eintr:
                        raise TimeoutError() from exc
                    continue
                raise
            if not chunk:
                raise OSError("Server unexpectedly closed connection")
            if self._pos:  # drop what was handed out before growing the buffer
                del buf[:self._pos]
                self._pos = 0
            buf += chunk
        start = self._pos
        end = start + n
        result = bytes(buf[start:end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return result


@contextmanager
def corked(conn: Any) -> Iterator[Callable[[], None]]:
    """Cork the transport of a connected kombu Connection for the block; yields ``flush``, to
    be called before waiting for the broker's answer to what was written. A no-op (``flush``
    does nothing) for a transport that cannot cork (TLS)."""
    transport = getattr(getattr(conn, "connection", None), "transport", None)
    if not isinstance(transport, BufferedTCPTransport):
        yield lambda: None
        return
    transport.cork()
    try:
        yield transport.flush
    finally:
        transport.uncork()


class _AmqpConnection(pyamqp.Connection):  # type: ignore[misc]
    def Transport(self, host: str, connect_timeout: float | None,
                  ssl: Any = False, read_timeout: float | None = None,
                  write_timeout: float | None = None, socket_settings: Any = None,
                  **kwargs: Any) -> amqp.transport._AbstractTransport:
        if ssl:
            return super().Transport(host, connect_timeout, ssl, read_timeout, write_timeout,
                                     socket_settings, **kwargs)
        return BufferedTCPTransport(host, connect_timeout=connect_timeout,
                                    read_timeout=read_timeout, write_timeout=write_timeout,
                                    socket_settings=socket_settings, **kwargs)


class _KombuTransport(pyamqp.Transport):  # type: ignore[misc]
    Connection = _AmqpConnection


class Connection(kombu.Connection):  # type: ignore[misc]
    """A kombu Connection whose py-amqp connections read through BufferedTCPTransport."""

    def get_transport_cls(self) -> type:
        cls = super().get_transport_cls()
        return _KombuTransport if cls is pyamqp.Transport else cls
