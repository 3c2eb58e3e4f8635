"""One ASGI server runner for every HTTP face of the bus (webhooks, availability, metrics, and
the console to come): uvicorn with its h11 protocol, on a socket bound first, in the calling
thread, until a ``stop`` event — under :class:`~integration_bus.http_limits.HttpLimits`.

What uvicorn does not do, and this module adds in its own protocol subclass:

- **Read deadlines.** uvicorn has no deadline for receiving a request: its keep-alive timer runs
  only between requests and every byte received cancels it, so a client that trickles a header
  byte at a time holds its connection forever. Here a request's head must be complete within
  ``header_timeout`` of the connection (or of the previous answer) and its body within
  ``body_timeout`` of the head; a connection past its deadline is aborted (its descriptor freed
  at once). Trickling does not extend a deadline.
- **A connection limit.** uvicorn accepts every connection (``limit_concurrency`` answers 503
  only once a request head arrived, so slow clients keep their descriptors). Here, at
  ``max_connections`` a new connection evicts the one that has waited longest for a request
  head — first among clients that have not completed a request on their connection or are
  part-way through a head (a slowloris), then among idle keep-alive connections (a client
  about to reuse one would otherwise lose its request); a request being handled is never cut.
  When every connection is busy, the new one is answered 503 and closed. ``max_connections``
  is lowered at start to fit the process's descriptor limit (``RLIMIT_NOFILE``), so accepting
  never fails with EMFILE.
- **Bounded logs.** Timeouts, evictions, malformed requests and event-loop errors (an EMFILE
  on accept would otherwise log a traceback per attempt) are logged once per kind, then
  counted into one summary line per ``log_every``. uvicorn's own error logger is rate-limited
  the same way while a server runs.

No ``/openapi.json`` or ``/docs`` unless the limits say ``docs: true`` (:func:`api`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import resource
import socket
import threading
import time
from collections import Counter, OrderedDict
from types import TracebackType
from typing import Any, ClassVar

import h11
import structlog
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp
from structlog.typing import FilteringBoundLogger
from uvicorn.protocols.http.h11_impl import H11Protocol

from integration_bus.errors import TransientError
from integration_bus.http_limits import HttpLimits

__all__ = ["HttpLimits", "HttpServer", "api"]

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
         b"content-length: 21\r\nconnection: close\r\n\r\ntoo many connections\n")
_RESERVE_FDS = 64  # for the store, the broker, files: never given to clients


def api(limits: HttpLimits | None = None, *, title: str = "integration-bus") -> FastAPI:
    """A FastAPI app whose OpenAPI schema and docs pages exist only if ``limits.docs``."""
    docs = limits is not None and limits.docs
    return FastAPI(openapi_url="/openapi.json" if docs else None,
                   docs_url="/docs" if docs else None, redoc_url=None, title=title)


class _Guard:
    """Per server: the limits, connections waiting for a request head (oldest first) and the
    bounded log of what went wrong."""

    def __init__(self, limits: HttpLimits, name: str, log: Any, max_connections: int) -> None:
        self.limits, self.name, self.log = limits, name, log
        self.max_connections = max_connections
        # connections waiting for a request head, oldest first: ``partial`` (new, or part-way
        # through a head) are evicted before ``idle`` (keep-alive, nothing sent since)
        self.partial: OrderedDict[_GuardedH11, None] = OrderedDict()
        self.idle: OrderedDict[_GuardedH11, None] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self._told: set[str] = set()
        self._since = time.monotonic()

    def note(self, kind: str, detail: str = "") -> None:
        """Count one ``kind`` of trouble; the first of each kind per interval is logged."""
        self.counts[kind] += 1
        if kind not in self._told:
            self._told.add(kind)
            self.log.warning("http.trouble", server=self.name, kind=kind, detail=detail[:300],
                             hint=f"repeats are counted in one summary per "
                                  f"{self.limits.log_every} ms")

    def tick(self, *, final: bool = False) -> None:
        if not final and time.monotonic() - self._since < self.limits.log_every / 1000:
            return
        if self.counts:
            self.log.warning("http.trouble_summary", server=self.name,
                             seconds=round(time.monotonic() - self._since, 1),
                             **dict(self.counts))
        self.counts.clear()
        self._told.clear()
        self._since = time.monotonic()

    def make_room(self) -> bool:
        """Evict the connection that has waited longest for a request head, if any."""
        for waiting in (self.partial, self.idle):
            if waiting:
                victim, _ = waiting.popitem(last=False)
                victim.expire("evicted")
                return True
        return False

    def forget(self, protocol: _GuardedH11) -> None:
        self.partial.pop(protocol, None)
        self.idle.pop(protocol, None)

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        kind = f"loop:{type(error).__name__}" if error is not None else "loop"
        self.note(kind, f"{context.get('message', '')}: {error}")


class _BoundedLog(logging.Filter):
    """Lets each distinct message of uvicorn's error logger through once per summary interval
    (its first traceback included) and counts the repeats."""

    def __init__(self, guard: _Guard) -> None:
        super().__init__()
        self._guard = guard

    def filter(self, record: logging.LogRecord) -> bool:
        kind = f"log:{str(record.msg)[:60]}"
        first = kind not in self._guard.counts
        self._guard.counts[kind] += 1
        return first


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with read deadlines and the connection limit (module doc)."""

    guard: ClassVar[_Guard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._answered = False  # a response was completed on this connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        if len(self.connections) > guard.max_connections and not guard.make_room():
            guard.note("refused", f"{guard.max_connections} connections, all busy")
            transport.write(_BUSY)
            transport.close()
            return
        self._follow()

    def data_received(self, data: bytes) -> None:
        guard = self.guard
        if self in guard.idle:  # an idle keep-alive connection starts a request
            del guard.idle[self]
            guard.partial[self] = None
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        self._answered = True
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(None)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Arm the deadline of the phase the client is in (a new phase, a new deadline)."""
        state = self.conn.their_state
        if self.transport.is_closing():
            phase = None
        elif state is h11.IDLE:
            phase = "head"
        elif state is h11.SEND_BODY:
            phase = "body"
        else:
            phase = None  # the request is complete: the app has it
        if phase != self._phase:
            self._enter(phase)

    def _enter(self, phase: str | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        guard = self.guard
        guard.forget(self)
        self._phase = phase
        limits = guard.limits
        if phase == "head":
            (guard.idle if self._answered else guard.partial)[self] = None
            self._timer = self.loop.call_later(limits.header_timeout / 1000, self.expire,
                                               "header_timeout")
        elif phase == "body":
            self._timer = self.loop.call_later(limits.body_timeout / 1000, self.expire,
                                               "body_timeout")

    def expire(self, kind: str) -> None:
        """Close now: past a deadline, or evicted to make room."""
        if self._phase is None:
            return
        self._enter(None)
        client = f"{self.client[0]}" if self.client else "?"
        self.guard.note(kind, f"client {client}")
        self.transport.abort()


class _Server(uvicorn.Server):
    """uvicorn that stops when ``stop`` is set, with the guard's loop handler and ticks."""

    def __init__(self, config: uvicorn.Config, stop: threading.Event, guard: _Guard) -> None:
        super().__init__(config)
        self._stop, self._guard = stop, guard

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().set_exception_handler(self._guard.loop_exception)
        await super().serve(sockets)

    async def on_tick(self, counter: int) -> bool:
        self._guard.tick()
        if self._stop.is_set():
            return True
        return await super().on_tick(counter)


def _fd_budget(backlog: int) -> int | None:
    """Descriptors clients may hold: the soft RLIMIT_NOFILE minus those open now, a reserve
    and an accept burst (None where it cannot be known)."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        open_now = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    # asyncio accepts up to ``backlog`` connections per readiness event, and the evictions
    # they cause close a loop iteration later: two bursts can be open at once
    return soft - open_now - _RESERVE_FDS - 2 * backlog


class HttpServer:
    """Serves one ASGI app on ``host:port`` (0: any free port) under ``limits``.

    Lifecycle: ``bind()`` (optional: ``run``/``start`` bind if needed; a failure is a
    TransientError naming host:port and ``field``), then either

    - ``run(stop)`` in the thread that should serve: it returns once ``stop`` is set and
      requests in flight got ``shutdown_grace`` to finish, and releases the socket; or
    - ``start()`` (or ``with server:``): serves in a daemon thread of its own and returns once
      listening; ``stop()`` (idempotent) ends it the same way and joins the thread.

    ``close()`` releases a socket bound but never served. ``port`` is the bound port (``url``
    the base URL to reach it); ``listening`` is set while serving. ``log`` is a structlog
    logger (one named ``integration_bus.http`` by default)."""

    def __init__(self, app: ASGIApp, *, host: str, port: int, limits: HttpLimits, name: str,
                 log: FilteringBoundLogger | None = None, field: str | None = None) -> None:
        self.app, self.host, self.limits, self.name = app, host, limits, name
        self._log: Any = log if log is not None else structlog.get_logger("integration_bus.http")
        self._wanted_port, self._field = port, field
        self._sock: socket.socket | None = None
        self.port: int | None = None
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound socket. Raises RuntimeError before ``bind()``."""
        if self.port is None:
            raise RuntimeError(f"server {self.name} is not bound yet: bind() or start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, stop: threading.Event | None = None, *,
              timeout: float = 10.0) -> HttpServer:
        """Bind, then serve in a daemon thread until :meth:`stop` (or ``stop``, an event the
        caller shares with other threads, is set — :meth:`stop` then sets that event too);
        returns once listening. Raises TransientError when it cannot bind or did not start
        within ``timeout`` seconds."""
        if self._thread is not None:
            return self
        self.bind()
        if stop is not None:
            self._stop = stop
        thread = threading.Thread(target=self.run, args=(self._stop,), daemon=True,
                                  name=f"http:{self.name}:{self.port}")
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not self.listening.wait(0.05):
            if not thread.is_alive() or time.monotonic() > deadline:
                if self._stop.is_set():
                    break  # stopped before it got going: nothing to report
                raise TransientError(f"the {self.name} server on {self.url} did not start",
                                     field=self._field)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """End what :meth:`start` began (requests in flight get ``shutdown_grace``) and wait up
        to ``timeout`` seconds for the thread; releases the socket. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the serving thread of :meth:`start`; True once it
        ended (or was never started)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def bind(self) -> int:
        if self._sock is not None:
            assert self.port is not None
            return self.port
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP
        # (without it every answer waits ~40 ms for a delayed ACK)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._wanted_port))
        except OSError as exc:
            sock.close()
            raise TransientError(f"cannot listen on {self.host}:{self._wanted_port}: "
                                 f"{exc.strerror}", field=self._field) from exc
        sock.listen(min(128, self.limits.max_connections))  # queue clients until run() serves
        self._sock, self.port = sock, int(sock.getsockname()[1])
        return self.port

    def close(self) -> None:
        if self._sock is not None and not self.listening.is_set():
            self._sock.close()
            self._sock = None

    def _max_connections(self, backlog: int) -> int:
        wanted = self.limits.max_connections
        budget = _fd_budget(backlog)
        if budget is not None and wanted > budget:
            self._log.warning("http.max_connections_lowered", server=self.name, wanted=wanted,
                              allowed=max(1, budget),
                              hint="raise the process's open-files limit (ulimit -n)")
            return max(1, budget)
        return wanted

    def run(self, stop: threading.Event) -> None:
        self.bind()
        sock = self._sock
        assert sock is not None
        limits = self.limits
        backlog = min(128, limits.max_connections)
        guard = _Guard(limits, self.name, self._log, self._max_connections(backlog))
        protocol = type("GuardedH11", (_GuardedH11,), {"guard": guard})
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", loop="asyncio",
            http=protocol, ws="none", proxy_headers=False, server_header=False,
            backlog=backlog, h11_max_incomplete_event_size=limits.max_header_bytes,
            timeout_keep_alive=max(1, math.ceil(limits.keep_alive / 1000)),
            timeout_graceful_shutdown=math.ceil(limits.shutdown_grace / 1000))
        bounded = _BoundedLog(guard)
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.addFilter(bounded)
        self.listening.set()
        try:
            _Server(config, stop, guard).run(sockets=[sock])
        finally:
            self.listening.clear()
            uvicorn_log.removeFilter(bounded)
            sock.close()
            self._sock = None
            guard.tick(final=True)
