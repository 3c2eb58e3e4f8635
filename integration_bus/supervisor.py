"""A supervisor loop: run a worker as a child process and restart it when a signal kills it.

``bus worker --supervise`` uses it. A worker that dies by a signal (SIGKILL, a segfault, the OOM
killer) is started again at once, then after a growing pause while it keeps dying (0.1 s
doubling to ``max_delay``, 1 s; back to 0.1 s once a child has lived a minute), so crash isolation
(``isolation``) gets to run the message that killed it alone, count the deaths and dead-letter
it. A child that exits by itself (0 after SIGTERM, 2 for a bad configuration) ends the loop with
its exit code: a configuration error must not become a restart loop. SIGTERM and SIGINT sent to
the supervisor go to the child, which finishes its in-flight messages and exits.

Under systemd or Docker Compose the same effect comes from ``Restart=on-failure`` /
``restart: on-failure`` on a plain ``bus worker``; this loop is for hosts without one, and keeps
the worker's restart delay short (both restart managers default to longer ones).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import structlog

from integration_bus.backoff import Backoff

__all__ = ["supervise"]

log = structlog.get_logger("integration_bus.supervisor")

HEALTHY_AFTER = 60.0  # seconds a child must live before the restart delay starts over


def supervise(command: Sequence[str], *, env: Mapping[str, str] | None = None,
              max_delay: float = 1.0, stop: threading.Event | None = None) -> int:
    """Run ``command`` until it exits by itself (its exit code is returned) or ``stop`` is set
    (SIGTERM/SIGINT set it when called from the main thread); restart it when a signal kills
    it. Returns 0 when stopped while no child is running."""
    stop = stop or threading.Event()
    child: list[subprocess.Popen[bytes]] = []
    restore = _forward_signals(stop, child)
    restarts = Backoff(first=0.1, cap=max_delay).start()
    try:
        while not stop.is_set():
            started = time.monotonic()
            proc = subprocess.Popen(list(command), env=dict(env) if env is not None else None)
            child[:] = [proc]
            log.info("supervisor.started", pid=proc.pid)
            code = _wait(proc, stop)
            child.clear()
            if code >= 0 or stop.is_set():
                return code if code >= 0 else 0
            if time.monotonic() - started > HEALTHY_AFTER:
                restarts.reset()
            delay = restarts.failed()
            log.warning("supervisor.child_died", pid=proc.pid, signal=_signal_name(-code),
                        restart_in=delay)
            if stop.wait(delay):
                return 0
        return 0
    finally:
        restore()


def _wait(proc: subprocess.Popen[bytes], stop: threading.Event) -> int:
    forwarded = False
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            if stop.is_set() and not forwarded:  # stopped from another thread
                proc.send_signal(signal.SIGTERM)
                forwarded = True


def _forward_signals(stop: threading.Event,
                     child: list[subprocess.Popen[bytes]]) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: object) -> None:
        stop.set()
        for proc in child:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return restore


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
