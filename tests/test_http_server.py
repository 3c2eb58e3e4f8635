"""The one HTTP runner (integration_bus.http_server) on real sockets: read deadlines that trickling
cannot extend, the connection limit (slow clients evicted first, 503 when all are busy), the
ceiling on accepted sockets under a flood, bounded logs, and no OpenAPI schema unless enabled.
The webhook receiver under 300 slow clients, in its own process with a descriptor limit:
tests/rest_shop/test_slow_clients.py."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import Request, Response

from integration_bus.http_limits import HttpLimits
from integration_bus.http_server import HttpServer, api
from tests.support.probe import wait_for
from tests.support.slowloris import Slowloris


class RecordingLog:
    """A structlog-shaped logger that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    info = error = warning


def _app(release: threading.Event | None = None) -> Any:
    app = api(HttpLimits())

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        body = await request.body()
        if release is not None:
            while not release.is_set():
                await asyncio.sleep(0.01)
        return Response(body, media_type="text/plain")

    return app


@contextmanager
def serving(app: Any, limits: HttpLimits, log: RecordingLog | None = None) -> Iterator[str]:
    server = HttpServer(app, host="127.0.0.1", port=0, limits=limits, name="test",
                        log=log or RecordingLog())
    port = server.bind()
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive()


def _connect(address: str) -> socket.socket:
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def _closed_by_peer(sock: socket.socket, within: float, trickle: bytes = b"") -> float:
    """Seconds until the server closed ``sock``, sending a byte of ``trickle`` every 50 ms."""
    started = time.monotonic()
    sock.settimeout(0.05)
    for byte in trickle or b"\0" * 1000:
        try:
            if trickle:
                sock.send(bytes([byte]))
            data = sock.recv(4096)
            if data == b"" or data.startswith(b"HTTP/1.1 4"):
                return time.monotonic() - started
        except TimeoutError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
        if time.monotonic() - started > within:
            break
    raise AssertionError(f"still open after {within} s")


def test_a_head_trickled_a_byte_at_a_time_meets_its_deadline() -> None:
    limits = HttpLimits(header_timeout="300ms")
    with serving(_app(), limits) as address, _connect(address) as sock:
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 500
        assert _closed_by_peer(sock, within=5, trickle=head) < 5


def test_a_silent_connection_is_closed_at_the_header_deadline() -> None:
    with serving(_app(), HttpLimits(header_timeout="200ms")) as address, \
            _connect(address) as sock:
        assert _closed_by_peer(sock, within=5) < 5


def test_a_body_trickled_a_byte_at_a_time_meets_its_deadline() -> None:
    limits = HttpLimits(body_timeout="300ms")
    with serving(_app(), limits) as address, _connect(address) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        assert _closed_by_peer(sock, within=5, trickle=b"b" * 1000) < 5


def test_slow_clients_are_evicted_for_a_new_one_and_a_busy_server_says_503() -> None:
    # Given room for 4 connections, all taken by clients that never finish their head
    log = RecordingLog()
    release = threading.Event()
    limits = HttpLimits(max_connections=4, header_timeout="30s")
    with serving(_app(release), limits, log) as address:
        idle = [_connect(address) for _ in range(4)]
        for sock in idle:
            sock.sendall(b"POST /echo HTTP/1.1\r\n")
        # When a real client comes, it gets in: the longest-waiting slow one makes room
        release.set()
        answer = httpx.post(f"http://{address}/echo", content=b"hello", timeout=5)
        assert answer.status_code == 200 and answer.text == "hello"
        assert _closed_by_peer(idle[0], within=5) < 5
        # And when every connection is busy with a request, a new one is told 503
        release.clear()
        busy = [threading.Thread(target=httpx.post, args=(f"http://{address}/echo",),
                                 kwargs={"content": b"x", "timeout": 10}) for _ in range(4)]
        for thread in busy:
            thread.start()
        wait_for(lambda: sum(1 for s in idle[1:] if _is_closed(s)) == 3, timeout=5,
                 message="the busy requests took the slow clients' places")
        refused = httpx.post(f"http://{address}/echo", content=b"x", timeout=5)
        assert refused.status_code == 503
        release.set()
        for thread in busy:
            thread.join(10)
        for sock in idle:
            sock.close()
    kinds = [fields["kind"] for event, fields in log.lines if event == "http.trouble"]
    assert "evicted" in kinds and "refused" in kinds


class _CountingListener(socket.socket):
    """A listening socket that counts the sockets it accepted that are not closed yet."""

    def __init__(self, fileno: int) -> None:
        super().__init__(fileno=fileno)
        self.open = self.peak = 0

    def accept(self) -> tuple[socket.socket, Any]:
        fd, address = self._accept()  # type: ignore[attr-defined]
        conn = _Counted(self, self.family, self.type, self.proto, fileno=fd)
        self.open += 1
        self.peak = max(self.peak, self.open)
        return conn, address


class _Counted(socket.socket):
    def __init__(self, listener: _CountingListener, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener = listener

    def close(self) -> None:
        if self.fileno() != -1:
            self._listener.open -= 1
        super().close()


@pytest.mark.slow
def test_a_flood_of_reconnecting_clients_never_holds_more_sockets_than_the_ceiling() -> None:
    # Given room for 16 connections (the ceiling: 16 more, one accept burst of newcomers still
    # to evict and victims still to close) and a listener that counts the sockets it hands out
    limits = HttpLimits(max_connections=16, header_timeout="30s")
    server = HttpServer(_app(), host="127.0.0.1", port=0, limits=limits, name="test",
                        log=RecordingLog())
    port = server.bind()
    assert server._sock is not None
    listener = server._sock = _CountingListener(server._sock.detach())
    attacks = [Slowloris(port, 50) for _ in range(4)]
    with server:
        # When 200 slow clients (in 4 threads, so that the listen queue refills at once) come
        # back whenever they are dropped
        for attack in attacks:
            attack.thread.start()
        try:
            wait_for(lambda: sum(attack.reconnects for attack in attacks) >= 200, timeout=60,
                     message="the slow clients were dropped and came back")
        finally:
            for attack in attacks:
                attack.stop.set()
            for attack in attacks:
                attack.thread.join(10)
    # Then the server never held more than the ceiling (asyncio's accept loop held several
    # bursts and their victims at once: the road to EMFILE), and closed every socket
    assert 16 < listener.peak <= 32, listener.peak
    assert listener.open == 0


def _is_closed(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_repeated_trouble_is_logged_once_then_counted() -> None:
    # Given 200 malformed requests and 50 that time out
    log = RecordingLog()
    limits = HttpLimits(header_timeout="100ms")
    with serving(_app(), limits, log) as address:
        for _ in range(200):
            with _connect(address) as sock:
                sock.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
                sock.recv(1024)
        slow = [_connect(address) for _ in range(50)]
        wait_for(lambda: all(_is_closed(s) for s in slow), timeout=10, message="timed out")
        for sock in slow:
            sock.close()
    # Then one line per kind of trouble, and a summary with the counts
    assert len(log.lines) <= 4, log.lines
    (summary,) = [fields for event, fields in log.lines if event == "http.trouble_summary"]
    assert summary["header_timeout"] == 50
    assert sum(v for k, v in summary.items() if k.startswith("log:")) == 200


@pytest.mark.parametrize("docs", [False, True])
def test_no_openapi_schema_or_docs_unless_enabled(docs: bool) -> None:
    limits = HttpLimits(docs=docs)
    app = api(limits)

    @app.get("/x")
    async def x() -> dict[str, str]:
        return {"x": "y"}

    with serving(app, limits) as address:
        for path in ("/openapi.json", "/docs"):
            status = httpx.get(f"http://{address}{path}", timeout=5).status_code
            assert status == (200 if docs else 404), path
