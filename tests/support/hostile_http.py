"""A loopback HTTP server that answers every request with one hostile answer: a body of hundreds
of MB (streamed from a generator, never built), garbage under a gzip/deflate header, ...

It speaks HTTP/1.0 (the body ends when the connection closes), so a client cannot learn the
size before reading unless ``Content-Length`` is set on purpose.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Answer", "HostileHttp", "zeros"]


def zeros(total: int, chunk: int = 1 << 20) -> Callable[[], Iterable[bytes]]:
    """A body of ``total`` zero bytes, produced chunk by chunk."""
    def body() -> Iterable[bytes]:
        block = bytes(chunk)
        sent = 0
        while sent < total:
            piece = block[: min(chunk, total - sent)]
            sent += len(piece)
            yield piece
    return body


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    body: Callable[[], Iterable[bytes]] = lambda: [b"{}"]


class HostileHttp:
    """``with HostileHttp(answer) as server: ... server.url``; ``sent`` counts body bytes
    written before the client stopped reading."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.sent = 0
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                owner.requests += 1
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(owner.answer.status)
                for name, value in owner.answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    for chunk in owner.answer.body():
                        self.wfile.write(chunk)
                        owner.sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what a capped client should do

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    def __enter__(self) -> HostileHttp:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
