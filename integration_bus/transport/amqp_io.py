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
from typing import Any

import amqp.transport
import kombu
from kombu.transport import pyamqp

__all__ = ["READ_SIZE", "BufferedTCPTransport", "Connection"]

READ_SIZE = 128 * 1024  # bytes asked of the socket per recv when the buffer runs dry


class BufferedTCPTransport(amqp.transport.TCPTransport):  # type: ignore[misc]
    """``TCPTransport`` whose reads take what the socket has (up to READ_SIZE) and keep the
    rest for the next frames. ``_read_buffer`` (which py-amqp's ``read_frame`` reads and
    rewrites when a read times out mid-frame) stays the unread bytes."""

    _buf: bytearray
    _pos: int

    def _setup_transport(self) -> None:
        super()._setup_transport()
        self._buf, self._pos = bytearray(), 0

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
