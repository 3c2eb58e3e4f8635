"""Private RabbitMQ and PostgreSQL instances for tests that crash or stop them.

The shared broker (``rabbit@localhost`` on 127.0.0.1:5672) and the shared
PostgreSQL cluster (127.0.0.1:5432) must never be stopped by tests.  Tests
that need an outage start an instance of their own with the classes here:

* :class:`PrivateRabbitMQ` -- a RabbitMQ node with a unique node name, its own
  free AMQP and distribution ports, its own Erlang cookie, config, plugins
  file and data directory (all under ``base_dir``).  ``kill()`` SIGKILLs the
  node's Erlang VM (``beam.smp``); ``start()`` brings the node back on the
  same ports with the same data, so durable (quorum) queues and confirmed
  messages survive.
* :class:`PrivatePostgres` -- a PostgreSQL 15 cluster (``initdb`` on first
  start, as the ``postgres`` OS user when running as root) listening on
  127.0.0.1 only; ``stop()`` is a fast shutdown that keeps the data.

Every process started here is also cleaned up by a ``weakref.finalize``
safety net (which runs at interpreter exit too), so an aborted test does not
leave brokers or databases behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import pwd
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import amqp
import psycopg

RABBITMQ_BIN_DIR = pathlib.Path(os.environ.get("BUSTEST_RABBITMQ_BIN_DIR", "/usr/lib/rabbitmq/bin"))
POSTGRES_BIN_DIR = pathlib.Path(
    os.environ.get("BUSTEST_POSTGRES_BIN_DIR", "/usr/lib/postgresql/15/bin")
)
EPMD_ADDRESS = ("127.0.0.1", 4369)

# Ports that free_port() never hands out: well-known ports of the shared
# services and the port range rabbitmqctl uses for its own distribution.
_RESERVED_PORTS = frozenset({4369, 5432, 5672, 15672, 25672, *range(35672, 35683)})
_handed_out_ports: set[int] = set()
#: under pytest-xdist, the file all workers note their ports in (set by tests/conftest.py)
PORTS_FILE: pathlib.Path | None = None
_ports_lock = threading.Lock()

# Environment variables that would make a private node pick up the settings of
# the shared one (/etc/rabbitmq/rabbitmq-env.conf sets NODENAME=rabbit@localhost
# and ERL_FLAGS) or of the caller's shell.
_STRIPPED_ENV_PREFIXES = ("RABBITMQ_", "ERL_", "NODENAME", "NODE_PORT", "CONFIG_FILE", "PG")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    The port is not reserved (another process could grab it before it is
    used), but the same port is never returned twice in one test run and
    the ports of the shared services are never returned. Under pytest-xdist
    the workers note the ports they hand out in one file (``PORTS_FILE``).
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        with _ports_lock:
            if port in _RESERVED_PORTS or port in _handed_out_ports:
                continue
            _handed_out_ports.add(port)
            if not _taken_by_workers(port):
                return port
    raise RuntimeError("could not find a free TCP port")


def _taken_by_workers(port: int) -> bool:
    """Whether another xdist worker handed out ``port`` already; if not, note it as ours
    (under an exclusive lock on ``PORTS_FILE``). Always False outside xdist."""
    if PORTS_FILE is None:
        return False
    with PORTS_FILE.open("a+") as noted:
        fcntl.flock(noted, fcntl.LOCK_EX)  # released when the file closes
        noted.seek(0)
        if str(port) in noted.read().split():
            return True
        noted.write(f"{port}\n")
    return False


# --------------------------------------------------------------------------
# small process helpers (Linux /proc based)
# --------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str, int, int] | None:
    """(comm, state, ppid, session id) of ``pid``, or None if it does not exist."""
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields: state ppid pgrp session ...
    return comm, fields[0], int(fields[1]), int(fields[3])


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    stat = _proc_stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")


def _session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and stat[3] == sid and stat[1] not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


def _wait_until(condition: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _tail(path: pathlib.Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<{path} not readable>"
    return "\n".join(text.splitlines()[-lines:])


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_ENV_PREFIXES)}
    env.update(extra)
    return env


def _epmd_names() -> set[str] | None:
    """Node names (without host) registered with the local epmd, None if epmd is down."""
    try:
        with socket.create_connection(EPMD_ADDRESS, timeout=2) as sock:
            sock.sendall(struct.pack(">HB", 1, 110))  # NAMES_REQ
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return None
    data = b"".join(chunks)[4:].decode(errors="replace")
    # lines look like: "name bustest-1a2b3c4d at port 40123"
    return {line.split()[1] for line in data.splitlines() if line.startswith("name ")}


# --------------------------------------------------------------------------
# RabbitMQ
# --------------------------------------------------------------------------


class _RabbitState:
    """Everything the safety-net finalizer needs (must not reference the owner)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def beam_pid(self) -> int | None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return None
        # The wrapper script runs `erl` in the background (exec chain
        # sh -> erl -> erlexec -> beam.smp), so the VM is in our session.
        for pid in _session_pids(proc.pid):
            stat = _proc_stat(pid)
            if stat is not None and stat[0] == "beam.smp":
                return pid
        return None

    def kill_all(self, timeout: float = 15) -> None:
        """SIGKILL the VM and every other process of the node's session, then reap."""
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.returncode is None:
                # While the session leader (the wrapper shell) is not reaped its
                # pid cannot be reused, so the session id is unambiguous.
                beam = self.beam_pid()
                if beam is not None:
                    _signal(beam, signal.SIGKILL)
                    _wait_until(lambda: not _alive(beam), timeout)
                for pid in _session_pids(proc.pid):
                    _signal(pid, signal.SIGKILL)
                _wait_until(lambda: not _session_pids(proc.pid), timeout)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        finally:
            self.proc = None

    @staticmethod
    def finalize(state: _RabbitState) -> None:
        state.kill_all()


class PrivateRabbitMQ:
    """A RabbitMQ node of the test's own, on free ports, data under ``base_dir``.

    ``start()`` can be called again after ``kill()`` or ``stop()``: the node
    comes back with the same node name, ports and data directory.
    """

    def __init__(self, base_dir: pathlib.Path) -> None:
        self.base_dir = pathlib.Path(base_dir).resolve()
        self.port = free_port()
        self.dist_port = free_port()
        self.node_name = f"bustest-{secrets.token_hex(4)}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.last_start_seconds: float | None = None
        self._home = self.base_dir / "home"
        self._log_dir = self.base_dir / "log"
        self._starts = 0
        self._state = _RabbitState()
        self._finalizer = weakref.finalize(self, _RabbitState.finalize, self._state)

    # -- files and environment ------------------------------------------------

    @property
    def log_file(self) -> pathlib.Path:
        """The node's main log file."""
        return self._log_dir / f"{self.node_name}.log"

    @property
    def console_log_file(self) -> pathlib.Path:
        """stdout/stderr of the wrapper script and the VM (all starts appended)."""
        return self._log_dir / "console.log"

    def _prepare(self) -> None:
        self._home.mkdir(parents=True, exist_ok=True)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "mnesia").mkdir(exist_ok=True)
        cookie = self._home / ".erlang.cookie"
        if not cookie.exists():
            # Own cookie in a private HOME: nothing is written to /root and the
            # shared node's cookie (/var/lib/rabbitmq/.erlang.cookie) is not needed.
            cookie.write_text(secrets.token_hex(20).upper())
            cookie.chmod(0o400)
        (self.base_dir / "enabled_plugins").write_text("[].\n")
        # Empty env file: never source /etc/rabbitmq/rabbitmq-env.conf, which
        # sets NODENAME=rabbit@localhost for the shared node.
        (self.base_dir / "rabbitmq-env.conf").write_text("")
        # Own config file: /etc/rabbitmq/rabbitmq.conf declares a listener on
        # the shared port 5672.
        (self.base_dir / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = 127.0.0.1:{self.port}",
                    "disk_free_limit.absolute = 1MB",
                    "log.console = false",
                    "log.file.level = info",
                    "",
                ]
            )
        )

    def _env(self) -> dict[str, str]:
        base = self.base_dir
        return _clean_env(
            {
                "HOME": str(self._home),
                "RABBITMQ_NODENAME": self.node_name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
                "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                "RABBITMQ_MNESIA_DIR": str(base / "mnesia" / self.node_name),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "mnesia" / "plugins-expand"),
                "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "mnesia" / "feature_flags"),
                "RABBITMQ_LOG_BASE": str(self._log_dir),
                "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
                # Erlang distribution only on loopback, epmd of the machine on 127.0.0.1.
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-kernel inet_dist_use_interface {127,0,0,1}"
                ),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
            }
        )

    # -- state ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the node's Erlang VM is alive (it may still be booting)."""
        return self._state.beam_pid() is not None

    @property
    def beam_pid(self) -> int | None:
        """PID of the node's Erlang VM (beam.smp), None if it is not running."""
        return self._state.beam_pid()

    def can_connect(self, timeout: float = 2) -> bool:
        """True if an AMQP connection (handshake as guest) succeeds now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout):
                pass
        except OSError:
            return False
        conn = amqp.Connection(
            host=f"127.0.0.1:{self.port}",
            userid="guest",
            password="guest",
            virtual_host="/",
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
        )
        try:
            conn.connect()
            return True
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                if conn.connected:
                    conn.close()
            conn.collect()

    # -- lifecycle ------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Start (or restart) the node and wait until an AMQP connection succeeds."""
        started = time.monotonic()
        deadline = started + timeout
        if self._state.proc is not None and not _alive(self._state.proc.pid):
            self._state.kill_all()  # the node died on its own: clean up and restart
        if self._state.proc is None:
            self._prepare()
            self._starts += 1
            with self.console_log_file.open("ab") as console:
                console.write(f"\n==== start #{self._starts} ====\n".encode())
                console.flush()
                self._state.proc = subprocess.Popen(
                    [str(RABBITMQ_BIN_DIR / "rabbitmq-server")],
                    env=self._env(),
                    cwd=self.base_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        proc = self._state.proc
        while not self.can_connect():
            if time.monotonic() >= deadline:
                self._state.kill_all()
                raise TimeoutError(
                    f"RabbitMQ node {self.node_name} did not accept AMQP connections on "
                    f"port {self.port} within {timeout}s; log tail:\n{_tail(self.log_file)}"
                )
            if not _alive(proc.pid):
                # Died while booting (zombie, not reaped yet: kill_all() can still
                # clean up the rest of its session before reaping it).
                self._state.kill_all()
                raise RuntimeError(
                    f"RabbitMQ node {self.node_name} exited with {proc.returncode} while "
                    f"starting; console:\n{_tail(self.console_log_file)}\n"
                    f"log:\n{_tail(self.log_file)}"
                )
            time.sleep(0.1)
        self.last_start_seconds = time.monotonic() - started

    def kill(self) -> None:
        """Crash the node: SIGKILL its Erlang VM and wait until it is gone."""
        beam = self._state.beam_pid()
        if beam is None:
            raise RuntimeError(f"RabbitMQ node {self.node_name} is not running")
        os.kill(beam, signal.SIGKILL)
        if not _wait_until(lambda: not _alive(beam), 15):
            raise RuntimeError(f"beam.smp {beam} survived SIGKILL")
        self._state.kill_all()  # reaps the wrapper script and erl_child_setup
        self._wait_unregistered()

    def stop(self, timeout: float = 60) -> None:
        """Stop the node gracefully (SIGTERM to the VM); idempotent.

        Falls back to SIGKILL after ``timeout`` seconds.  Always leaves no
        process of the node behind, also after ``kill()``.
        """
        proc = self._state.proc
        if proc is None:
            return
        beam = self._state.beam_pid()
        if beam is not None:
            # RabbitMQ >= 3.8 shuts down gracefully on SIGTERM ("SIGTERM received -
            # shutting down" in the log); the wrapper script would forward it too.
            _signal(beam, signal.SIGTERM)
            _wait_until(lambda: not _alive(beam), timeout)
        # SIGKILLs the VM if it did not stop in time and any leftover of its
        # session (erl_child_setup, the wrapper shell), then reaps the wrapper.
        self._state.kill_all()
        self._wait_unregistered()

    def _wait_unregistered(self, timeout: float = 10) -> None:
        # After the VM is gone, epmd must have dropped the node name before the
        # same name can be registered again by the next start().
        short_name = self.node_name.split("@", 1)[0]

        def gone() -> bool:
            names = _epmd_names()
            return names is None or short_name not in names

        _wait_until(gone, timeout)

    def wait_quorum_queue_persisted(
        self, queue: str, vhost: str = "/", timeout: float = 15
    ) -> None:
        """Wait until the Ra registration of quorum queue ``queue`` is on disk.

        RabbitMQ 3.10 (Ra 2.2) records which Ra server belongs to a quorum
        queue in a DETS file (``quorum/<node>/names.dets``) that is written
        lazily, about 0.5-1 s after the queue is declared.  If the node is
        SIGKILLed inside that window, the queue still exists after the restart
        but its Ra server is never started and every operation on it fails with
        ``INTERNAL_ERROR ... timeout``.  That is real broker behaviour, not a
        harness problem: call this after declaring quorum queues and before
        ``kill()`` when a test is about message durability, not about this
        window.  (Confirmed messages themselves are fsynced to the Ra WAL
        before the confirm, so they need no extra wait.)
        """
        prefix = "%2F" if vhost == "/" else vhost
        name = f"{prefix}_{queue}".encode()
        # The Ra server name is stored as an atom in the external term format
        # (OTP 25 writes ATOM_EXT: tag 100, 2-byte length, bytes).  Matching the
        # header too avoids prefix matches ("q" vs "q.dlq").
        needles = [
            *(struct.pack(">BH", tag, len(name)) + name for tag in (100, 118)),
            *(struct.pack(">BB", tag, len(name)) + name for tag in (115, 119)),
        ]
        node = self.node_name
        names = self.base_dir / "mnesia" / node / "quorum" / node / "names.dets"

        def persisted() -> bool:
            try:
                data = names.read_bytes()
            except FileNotFoundError:
                return False
            return any(needle in data for needle in needles)

        if not _wait_until(persisted, timeout):
            raise TimeoutError(f"quorum queue {queue!r} not registered in {names} after {timeout}s")

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n <this node> ARGS`` (never touches rabbit@localhost)."""
        return subprocess.run(
            [str(RABBITMQ_BIN_DIR / "rabbitmqctl"), "-n", self.node_name, *args],
            env=self._env(),
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def __enter__(self) -> PrivateRabbitMQ:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<PrivateRabbitMQ {self.node_name} port={self.port} dir={self.base_dir}>"


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


class _PostgresState:
    def __init__(self) -> None:
        self.workdir: pathlib.Path | None = None
        self.run_as: pwd.struct_passwd | None = None

    @property
    def pgdata(self) -> pathlib.Path:
        assert self.workdir is not None
        return self.workdir / "data"

    @property
    def log_path(self) -> pathlib.Path:
        assert self.workdir is not None
        return self.workdir / "postgres.log"

    def run(
        self, args: list[str], timeout: float, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert self.workdir is not None
        kwargs: dict[str, Any] = {}
        env = _clean_env({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
        if self.run_as is not None:
            kwargs.update(user=self.run_as.pw_uid, group=self.run_as.pw_gid, extra_groups=[])
            user = self.run_as
            env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
        result = subprocess.run(
            args,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def postmaster_pid(self) -> int | None:
        if self.workdir is None:
            return None
        try:
            first = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return None
        stat = _proc_stat(pid)
        if stat is None or stat[0] != "postgres" or stat[1] in ("Z", "X"):
            return None
        return pid

    def shutdown(self, mode: str, timeout: float) -> None:
        pid = self.postmaster_pid()
        if pid is None:
            return
        self.run(
            [
                str(POSTGRES_BIN_DIR / "pg_ctl"),
                "stop",
                "-D",
                str(self.pgdata),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(timeout)),
            ],
            timeout=timeout + 10,
            check=False,
        )
        if not _wait_until(lambda: not _alive(pid), 10):
            _signal(pid, signal.SIGKILL)  # pg_ctl failed or timed out: do not leave it running
            _wait_until(lambda: not _alive(pid), timeout)

    def remove(self, keep_log_in: pathlib.Path | None = None) -> None:
        workdir = self.workdir
        if workdir is None:
            return
        self.shutdown("immediate", 30)
        if keep_log_in is not None:
            with contextlib.suppress(OSError):
                keep_log_in.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(workdir / "postgres.log", keep_log_in / "postgres.log")
        shutil.rmtree(workdir, ignore_errors=True)
        self.workdir = None

    @staticmethod
    def finalize(state: _PostgresState) -> None:
        state.remove()


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own on a free port (trust auth, user postgres).

    The cluster lives in a private directory under /tmp (owned by the
    ``postgres`` OS user when running as root, because pytest's tmp dirs are
    not traversable for other users).  It is removed by ``__exit__``/``close()``
    (which first copy the server log to ``base_dir/postgres.log``) and, as a
    safety net, when the object is garbage-collected or the interpreter exits.
    """

    def __init__(self, base_dir: pathlib.Path) -> None:
        self.base_dir = pathlib.Path(base_dir).resolve()
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.last_start_seconds: float | None = None
        self._state = _PostgresState()
        self._finalizer = weakref.finalize(self, _PostgresState.finalize, self._state)

    @property
    def dsn(self) -> str:
        """libpq connection string (for psycopg.connect)."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    @property
    def data_dir(self) -> pathlib.Path | None:
        return self._state.pgdata if self._state.workdir is not None else None

    @property
    def log_file(self) -> pathlib.Path | None:
        return self._state.workdir / "postgres.log" if self._state.workdir is not None else None

    @property
    def running(self) -> bool:
        return self._state.postmaster_pid() is not None

    def can_connect(self, timeout: float = 2) -> bool:
        try:
            with psycopg.connect(self.dsn, connect_timeout=max(1, int(timeout))) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def _init(self) -> None:
        state = self._state
        state.workdir = pathlib.Path(tempfile.mkdtemp(prefix="bustest-pg-", dir="/tmp"))
        if os.geteuid() == 0:
            state.run_as = pwd.getpwnam("postgres")
            os.chown(state.workdir, state.run_as.pw_uid, state.run_as.pw_gid)
        state.workdir.chmod(0o700)
        state.run(
            [
                str(POSTGRES_BIN_DIR / "initdb"),
                "-D",
                str(state.pgdata),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            timeout=120,
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{state.workdir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_connections": "50",
            "logging_collector": "off",
        }
        with (state.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\n# integration-bus test instance\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self, timeout: float = 60) -> None:
        """initdb on first start, then ``pg_ctl start``; wait until a connection succeeds."""
        started = time.monotonic()
        deadline = started + timeout
        if self._state.workdir is None:
            self._init()
        state = self._state
        log = state.log_path
        if state.postmaster_pid() is None:
            result = state.run(
                [
                    str(POSTGRES_BIN_DIR / "pg_ctl"),
                    "start",
                    "-D",
                    str(state.pgdata),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    str(int(timeout)),
                ],
                timeout=timeout + 10,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"pg_ctl start failed ({result.returncode}): {result.stdout}{result.stderr}"
                    f"\nlog tail:\n{_tail(log)}"
                )
        while not self.can_connect():
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"PostgreSQL on port {self.port} did not accept connections within "
                    f"{timeout}s; log tail:\n{_tail(log)}"
                )
            if state.postmaster_pid() is None:
                raise RuntimeError(
                    f"PostgreSQL on port {self.port} exited while starting; log tail:\n{_tail(log)}"
                )
            time.sleep(0.05)
        self.last_start_seconds = time.monotonic() - started

    def stop(self, timeout: float = 60) -> None:
        """Fast shutdown (``pg_ctl -m fast``); data is kept for the next start(). Idempotent."""
        self._state.shutdown("fast", timeout)

    def close(self) -> None:
        """Stop the server and delete its data (the log is copied to base_dir)."""
        self._state.remove(keep_log_in=self.base_dir)

    def __enter__(self) -> PrivatePostgres:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PrivatePostgres port={self.port} dir={self._state.workdir}>"
