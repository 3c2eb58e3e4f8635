"""Slow clients for HTTP servers under test: a slowloris that holds partial request heads open
and reconnects whenever the server drops one."""

from __future__ import annotations

import socket
import threading

__all__ = ["Slowloris"]


class Slowloris:
    """Keeps ``count`` partial requests open against ``port`` from one thread (``thread``; set
    ``stop`` to end it); ``reconnects`` counts the connections the server dropped."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.reconnects = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            sock.sendall(b"POST /webhooks/acme HTTP/1.1\r\nHost: shop\r\nX-Slow: ")
        except OSError:
            return None
        sock.setblocking(False)
        return sock

    def _alive(self, sock: socket.socket) -> bool:
        try:
            sock.send(b"a")
            return sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _run(self) -> None:
        socks = [s for s in (self._open() for _ in range(self.count)) if s is not None]
        while not self.stop.wait(0.2):
            for index, sock in enumerate(socks):
                if not self._alive(sock):
                    sock.close()
                    self.reconnects += 1
                    again = self._open()
                    if again is not None:
                        socks[index] = again
        for sock in socks:
            sock.close()
