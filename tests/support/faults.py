"""Fault tools shared by the fault experiments (``python -m pytest -m faults``).

- :data:`CRASHER`: a jsonl sink that SIGKILLs its own process on ``"poison": true`` — the way a
  segfaulting native library or the OOM killer ends a worker. With ``"marked_rows": N`` and
  ``"store": <SQLite file>`` in the payload too, it first waits (up to 30 s) until the store
  holds N crash-marker rows, so the crash lands while the next batch stands marked ahead.
- :data:`TCP_SINK` / :class:`Blackhole`: a sink that sends each envelope as one line over TCP and
  waits for ``ok``; and a TCP server that accepts and never answers (until told to answer).
- :class:`Supervised`: ``bus worker --supervise`` (or the crashing worker under the same
  supervisor loop) as a child process, stopped with SIGTERM.
- :func:`longest_stall`: the longest pause of a sink's output file while it should grow.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from connectors.jsonl import JsonlSink, JsonlSinkConfig
from integration_bus.connector import ConnectorContext, ConnectorPlugin, Envelope
from integration_bus.errors import TransientError
from tests.support.probe import wait_for

__all__ = ["CRASHER", "TCP_SINK", "Blackhole", "Supervised", "longest_stall", "sink_lines"]

REPO = Path(__file__).resolve().parent.parent.parent


# -- a sink that kills its process -----------------------------------------------------------------
class CrashingSink(JsonlSink):
    """jsonl sink (each line also carries the time it was written) that dies on poison."""

    def deliver(self, envelope: Envelope) -> None:
        payload = envelope.payload
        if isinstance(payload, dict) and payload.get("poison"):
            if payload.get("marked_rows"):
                _wait_for_marker_rows(payload["store"], int(payload["marked_rows"]))
            os.kill(os.getpid(), signal.SIGKILL)
        super().deliver(envelope)


def _wait_for_marker_rows(store: str, rows: int, timeout: float = 30.0) -> None:
    """Until the SQLite store at ``store`` holds ``rows`` crash-marker rows, or ``timeout``
    passed: the sink dies either way, and the test then finds how many stood."""
    import sqlite3

    def marked() -> bool:
        conn = sqlite3.connect(store, timeout=5)
        try:
            return bool(conn.execute("SELECT count(*) FROM crash_markers").fetchone()[0] >= rows)
        finally:
            conn.close()

    try:
        wait_for(marked, timeout=timeout, interval=0.01, message=f"{rows} marker rows")
    except AssertionError:
        pass


def _create_crasher(config: JsonlSinkConfig, context: ConnectorContext) -> CrashingSink:
    return CrashingSink(config, context)


CRASHER = ConnectorPlugin(name="crasher", summary="jsonl sink that dies on poison",
                          sink_config=JsonlSinkConfig, create_sink=_create_crasher)


# -- a sink over plain TCP, and a server that never answers ----------------------------------------
class TcpSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    timeout: float = Field(60.0, gt=0, description="socket timeout of one call, seconds")


class TcpSink:
    """Sends ``idempotency_key\\n`` and waits for ``ok\\n``; anything else is transient."""

    def __init__(self, config: TcpSinkConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._config = config

    def deliver(self, envelope: Envelope) -> None:
        try:
            with socket.create_connection((self._config.host, self._config.port),
                                          timeout=self._config.timeout) as conn:
                conn.sendall(envelope.idempotency_key.encode() + b"\n")
                answer = conn.makefile("rb").readline()
        except OSError as exc:
            raise TransientError(f"tcp sink: {exc}") from exc
        if answer != b"ok\n":
            raise TransientError(f"tcp sink: unexpected answer {answer!r}")

    def close(self) -> None:
        """Nothing held between calls."""


def _create_tcp(config: TcpSinkConfig, context: ConnectorContext) -> TcpSink:
    return TcpSink(config, context)


TCP_SINK = ConnectorPlugin(name="tcp", summary="one line over TCP, waits for ok",
                           sink_config=TcpSinkConfig, create_sink=_create_tcp)


class Blackhole:
    """A TCP server on loopback that accepts connections and reads, but never answers — until
    :meth:`heal`, after which it answers ``ok`` to every line (and records the keys in
    ``answered``). ``with Blackhole() as hole: hole.port``."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.healed = threading.Event()
        self.received: list[str] = []
        self.answered: list[str] = []
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Blackhole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._server.close()
        self._drop_held()

    def heal(self) -> None:
        """Answer from now on; connections held so far are closed (their calls fail)."""
        self.healed.set()
        self._drop_held()

    def _drop_held(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            conn.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            line = conn.makefile("rb").readline().strip().decode()
        except OSError:
            conn.close()
            return
        with self._lock:
            self.received.append(line)
            if not self.healed.is_set():
                self._held.append(conn)  # accepted, read, never answered
                return
            self.answered.append(line)
        try:
            conn.sendall(b"ok\n")
        finally:
            conn.close()


# -- a supervised worker process ----------------------------------------------------------------
class Supervised:
    """A worker under the supervisor loop in its own process; ``starts()`` counts the worker
    children it started (from the log)."""

    def __init__(self, args: Sequence[str], log: Path) -> None:
        self.args, self.log = list(args), log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Supervised:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=out, stderr=out,
                                         env={**os.environ, "BUS_LOG_LEVEL": "info"})
        return self

    def starts(self) -> int:
        return self.log.read_bytes().count(b"supervisor.started") if self.log.exists() else 0

    def deaths(self) -> int:
        return self.log.read_bytes().count(b"supervisor.child_died") if self.log.exists() else 0

    def stop(self) -> int:
        assert self.proc is not None
        # wait until the current child consumes: SIGTERM during its imports would kill it
        wait_for(lambda: self.log.read_bytes().count(b"worker.consuming") >= 1, timeout=60,
                 message="worker consuming")
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def child_pid(self) -> int:
        """The pid of the worker child the supervisor started last (from its log)."""
        pids = re.findall(rb"supervisor.started.*?pid\W+(\d+)", self.log.read_bytes())
        assert pids, "the supervisor has not started a worker"
        return int(pids[-1])

    def cleanup(self) -> None:
        """Kill what is left: the supervisor, then the last child it logged (by pid)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.starts():
            try:
                os.kill(self.child_pid(), signal.SIGKILL)
            except ProcessLookupError:
                pass


def crashing_worker(config_dir: Path) -> list[str]:
    """The command of a supervised worker with the crasher and tcp sinks registered."""
    return [sys.executable, "-m", "tests.support.crashing_worker", str(config_dir),
            "--supervise"]


# -- reading results ---------------------------------------------------------------------------
def sink_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines(keepends=True)
            if line.endswith(b"\n")]


def longest_stall(samples: Sequence[tuple[float, int]], total: int) -> float:
    """The longest time (seconds) a growing count stood still before reaching ``total``."""
    longest, since, last = 0.0, None, -1
    for at, count in samples:
        if count >= total:
            break
        if count != last:
            since, last = at, count
        elif since is not None:
            longest = max(longest, at - since)
    return longest


def file_times(path: Path, every: float, stop: threading.Event) -> list[tuple[float, int]]:
    """Sample (time, line count) of a growing file every ``every`` s until ``stop`` (a probe
    thread's body: run it in a thread and read the list afterwards)."""
    samples: list[tuple[float, int]] = []
    while not stop.wait(every):
        count = path.read_bytes().count(b"\n") if path.exists() else 0
        samples.append((time.monotonic(), count))
    return samples
