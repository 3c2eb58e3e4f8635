"""A loopback TCP proxy that stops passing the server's answers once a client has sent enough.

Put between a publisher and RabbitMQ, it lets the connection open and the publishes through,
then holds the broker's replies (the publisher confirms) of any connection that has sent more
than ``hold_after`` bytes: the publisher is then parked, deterministically, between sending a
batch and learning it was confirmed — the moment to SIGKILL it in a crash test.
"""

from __future__ import annotations

import socket
import threading

__all__ = ["HoldingProxy"]


class HoldingProxy:
    """``with HoldingProxy(5672, hold_after=65536) as proxy: ... proxy.port``; ``holding`` is set
    once some connection's replies are being held."""

    def __init__(self, target_port: int, *, hold_after: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._hold_after = hold_after
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.holding = threading.Event()
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()

    def __enter__(self) -> HoldingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            self._sockets += [client, server]
            sent = [0]
            held = threading.Event()
            threading.Thread(target=self._up, args=(client, server, sent, held),
                             daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, held),
                             daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, sent: list[int],
            held: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                server.sendall(data)
                sent[0] += len(data)
                if sent[0] > self._hold_after and not held.is_set():
                    held.set()
                    self.holding.set()
        except OSError:
            pass

    @staticmethod
    def _down(server: socket.socket, client: socket.socket, held: threading.Event) -> None:
        try:
            while data := server.recv(65536):
                if not held.is_set():  # held: the answers are read and never passed on
                    client.sendall(data)
        except OSError:
            pass
