"""One ASGI server runner for every HTTP face of the bus (webhooks, availability, metrics, and
the console to come): uvicorn with its h11 protocol, on a socket bound first, in the calling
thread, until a ``stop`` event — under :class:`~integration_bus.http_limits.HttpLimits`.

What uvicorn does not do, and this module adds in its own protocol subclass and accept loop:

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
  When every connection is busy, the new one is answered 503 and closed.
- **A descriptor ceiling** (:class:`_Acceptor`, in place of asyncio's accept loop, which takes
  up to a backlog of sockets per readiness event, seen by the protocol two loop iterations
  later, while evicted sockets close an iteration late: floods piled bursts up into EMFILE).
  Client sockets are counted from ``accept`` to close; at most ``max_connections`` plus one
  burst are open (newcomers yet to evict, victims yet to close), and ``max_connections`` is
  lowered at start to fit that under ``RLIMIT_NOFILE``. At the ceiling a client waits in the
  listen queue an iteration or two, or gets a 503 at once when every connection is busy.
- **Bounded logs.** Timeouts, evictions, malformed requests and event-loop errors (an EMFILE
  on accept would otherwise log a traceback per attempt) are logged once per kind, then
  counted into one summary line per ``log_every``. uvicorn's own error logger is rate-limited
  the same way while a server runs.

No ``/openapi.json`` or ``/docs`` unless the limits say ``docs: true`` (:func:`api`).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import math
import os
import resource
import socket
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
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
_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}  # out of resources
_ACCEPT_PAUSE = 0.1  # seconds without accepting after one of those


def api(limits: HttpLimits | None = None, *, title: str = "integration-bus") -> FastAPI:
    """A FastAPI app whose OpenAPI schema and docs pages exist only if ``limits.docs``."""
    docs = limits is not None and limits.docs
    return FastAPI(openapi_url="/openapi.json" if docs else None,
                   docs_url="/docs" if docs else None, redoc_url=None, title=title)


class _Guard:
    """Per server: the limits, the client descriptors open, connections waiting for a request
    head (oldest first) and the bounded log of what went wrong."""

    def __init__(self, limits: HttpLimits, name: str, log: Any, max_connections: int) -> None:
        self.limits, self.name, self.log = limits, name, log
        self.max_connections = max_connections
        # client sockets from accept to close (right after ``connection_lost``); of those, the
        # ones yet to see ``connection_made`` and the ones aborted yet to see ``connection_lost``
        self.open = 0
        self.starting = 0
        self.closing = 0
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
        """Evict the connection that has waited longest for a request head, if any (its socket
        closes in the next loop iteration)."""
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


class _Acceptor:
    """Accepts on a listening socket for ``factory``, up to ``burst`` per readiness event, while
    fewer than ``guard.max_connections + burst`` client sockets are open (module doc).
    Lifecycle: ``start()`` in the serving loop; ``close()`` (idempotent) before the socket's."""

    def __init__(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol],
                 guard: _Guard, burst: int) -> None:
        self._sock, self._factory, self._guard, self._burst = sock, factory, guard, burst
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._ready)

    def close(self) -> None:
        if self._loop is not None and self._sock.fileno() != -1:
            self._loop.remove_reader(self._sock.fileno())
        self._loop = None

    def _ready(self) -> None:
        guard = self._guard
        for _ in range(self._burst):
            full = guard.open >= guard.max_connections + self._burst
            if full and (guard.starting or guard.closing or guard.make_room()):
                # descriptors come free within two loop iterations, and the listening socket
                # stays ready until then: the client waits in its queue
                return
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                guard.note(f"accept:{errno.errorcode.get(exc.errno or 0, 'OSError')}", str(exc))
                if exc.errno in _ACCEPT_ERRORS and self._loop is not None:
                    # Linux reports the socket ready meanwhile: wait for descriptors to close
                    self._loop.remove_reader(self._sock.fileno())
                    self._loop.call_later(_ACCEPT_PAUSE, self._resume)
                return
            if full:  # every connection is busy with a request: 503, never held past here
                guard.note("refused", f"{guard.max_connections} connections, all busy")
                try:
                    conn.send(_BUSY)  # a fresh socket's send buffer takes it whole
                except OSError:
                    pass  # the client is gone already
                conn.close()
                continue
            guard.open += 1
            guard.starting += 1
            task = asyncio.get_running_loop().create_task(self._connect(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self._factory, conn)
        except OSError as exc:  # no transport took the socket: no connection_lost will count it
            self._guard.note("accept", str(exc))
            self._guard.open -= 1
            self._guard.starting -= 1
            conn.close()

    def _resume(self) -> None:
        if self._loop is not None and self._sock.fileno() != -1:
            self._loop.add_reader(self._sock.fileno(), self._ready)


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with read deadlines and the connection limit (module doc), for
    connections an :class:`_Acceptor` accepted (and counted)."""

    guard: ClassVar[_Guard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._answered = False  # a response was completed on this connection
        self._aborted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        guard.starting -= 1
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
        self.guard.open -= 1  # asyncio closes the socket right after this returns
        if self._aborted:
            self.guard.closing -= 1
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
        self._aborted = True
        self.guard.closing += 1
        self.transport.abort()


class _Server(uvicorn.Server):
    """uvicorn that stops when ``stop`` is set, with the guard's loop handler and ticks, and
    that accepts on its sockets with an :class:`_Acceptor` each instead of asyncio's server."""

    def __init__(self, config: uvicorn.Config, stop: threading.Event, guard: _Guard,
                 protocol: type[_GuardedH11], burst: int) -> None:
        super().__init__(config)
        self._stop, self._guard, self._protocol, self._burst = stop, guard, protocol, burst
        self._acceptors: list[_Acceptor] = []

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().set_exception_handler(self._guard.loop_exception)
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # the lifespan and state, without asyncio servers
        if self.should_exit:
            return
        factory = functools.partial(self._protocol, config=self.config,
                                    server_state=self.server_state,
                                    app_state=self.lifespan.state)
        for sock in sockets or []:
            acceptor = _Acceptor(sock, factory, self._guard, self._burst)
            acceptor.start()
            self._acceptors.append(acceptor)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for acceptor in self._acceptors:
            acceptor.close()
        await super().shutdown(sockets)

    async def on_tick(self, counter: int) -> bool:
        self._guard.tick()
        if self._stop.is_set():
            return True
        return await super().on_tick(counter)


def _fd_budget(burst: int) -> int | None:
    """Connections clients may hold: the soft RLIMIT_NOFILE minus descriptors open now, a
    reserve, the acceptor's ``burst`` and a refusal's one (None where it cannot be known)."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        open_now = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    return soft - open_now - _RESERVE_FDS - burst - 1


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
        # the listen queue's length, and the most connections accepted per readiness event
        self._backlog = min(128, limits.max_connections)
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
        sock.listen(self._backlog)  # queue clients until run() serves
        self._sock, self.port = sock, int(sock.getsockname()[1])
        return self.port

    def close(self) -> None:
        if self._sock is not None and not self.listening.is_set():
            self._sock.close()
            self._sock = None

    def _max_connections(self) -> int:
        wanted = self.limits.max_connections
        budget = _fd_budget(self._backlog)
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
        guard = _Guard(limits, self.name, self._log, self._max_connections())
        protocol: type[_GuardedH11] = type("GuardedH11", (_GuardedH11,), {"guard": guard})
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", loop="asyncio",
            http=protocol, ws="none", proxy_headers=False, server_header=False,
            h11_max_incomplete_event_size=limits.max_header_bytes,
            timeout_keep_alive=max(1, math.ceil(limits.keep_alive / 1000)),
            timeout_graceful_shutdown=math.ceil(limits.shutdown_grace / 1000))
        bounded = _BoundedLog(guard)
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.addFilter(bounded)
        self.listening.set()
        try:
            _Server(config, stop, guard, protocol, self._backlog).run(sockets=[sock])
        finally:
            self.listening.clear()
            uvicorn_log.removeFilter(bounded)
            sock.close()
            self._sock = None
            guard.tick(final=True)
