"""A supervisor loop: run a worker as a child process and restart it when a signal kills it.

``bus worker --supervise`` uses it. A worker that dies by a signal (SIGKILL, a segfault, the OOM
killer) is started again at once, then after a growing pause while it keeps dying (0.1 s
doubling to ``max_delay``, 1 s; back to 0.1 s once a child has lived a minute), so crash isolation
(``isolation``) gets to run the message that killed it alone, count the deaths and dead-letter
it. A child that exits by itself (0 after SIGTERM, 2 for a bad configuration) ends the loop with
its exit code: a configuration error must not become a restart loop. SIGTERM and SIGINT sent to
the supervisor go to the child, which finishes its in-flight messages and exits; a child still
running :data:`STOP_GRACE` seconds later is killed (SIGKILL: what it held unacked goes back to
its queue) and the supervisor exits 1.

Under systemd or Docker Compose the same effect comes from ``Restart=on-failure`` /
``restart: on-failure`` on a plain ``bus worker``; this loop is for hosts without one, and keeps
the worker's restart delay short (both restart managers default to longer ones).

``bus worker --processes N`` runs N such children side by side, each restarted on its own: the
way to use more than one core (one Python process works its lanes in threads, one core at a time).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

import structlog

from integration_bus.backoff import Backoff, BackoffState
from integration_bus.threads import stop_on_signals

__all__ = ["supervise"]

log = structlog.get_logger("integration_bus.supervisor")

HEALTHY_AFTER = 60.0  # seconds a child must live before the restart delay starts over
#: seconds the children have to finish their in-flight messages once told to stop (a sink call
#: ends by its route's deadline, reading late deliveries by the worker's drain timeout)
STOP_GRACE = 60.0


def supervise(command: Sequence[str], *, env: Mapping[str, str] | None = None,
              max_delay: float = 1.0, stop: threading.Event | None = None,
              processes: int = 1, stop_grace: float = STOP_GRACE) -> int:
    """Run ``processes`` copies of ``command`` until one exits by itself or ``stop`` is set
    (SIGTERM/SIGINT set it when called from the main thread); restart a copy when a signal kills
    it. Each copy gets ``BUS_PROCESS_INDEX`` (0, 1, …) in its environment.

    When a copy exits by itself, the others are stopped (SIGTERM: they finish their in-flight
    messages) and the first such exit code is returned, so ``bus worker --processes 2`` with a
    bad configuration exits 2 once instead of restarting. When stopped, returns the worst exit
    code of the copies still running then (0 when all finished cleanly; 1 when one had to be
    killed, still running ``stop_grace`` seconds after its SIGTERM)."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    stop = stop or threading.Event()
    slots = [_Slot(index) for index in range(processes)]
    with stop_on_signals(stop, then=lambda: _terminate(slots)):
        for slot in slots:
            slot.start(command, env)
        while True:
            if stop.is_set():
                return _stop_all(slots, stop_grace)
            for slot in slots:
                code = slot.poll()
                if code is None:
                    continue
                if code >= 0:  # exited by itself: the whole group ends with its code
                    stop.set()
                    rest = _stop_all(slots, stop_grace)
                    return code or rest
                slot.died(-code, max_delay)
            now = time.monotonic()
            for slot in slots:
                if slot.proc is None and slot.restart_at <= now and not stop.is_set():
                    slot.start(command, env)
            stop.wait(0.1)


class _Slot:
    """One copy of the command: its current process and its own restart delay."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restarts: BackoffState | None = None
        self.restart_at = 0.0

    def start(self, command: Sequence[str], env: Mapping[str, str] | None) -> None:
        base = dict(env) if env is not None else dict(os.environ)
        base["BUS_PROCESS_INDEX"] = str(self.index)
        self.proc = subprocess.Popen(list(command), env=base)
        self.started = time.monotonic()
        log.info("supervisor.started", pid=self.proc.pid, process=self.index)

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def died(self, signum: int, max_delay: float) -> None:
        assert self.proc is not None
        if self.restarts is None:
            self.restarts = Backoff(first=0.1, cap=max_delay).start()
        if time.monotonic() - self.started > HEALTHY_AFTER:
            self.restarts.reset()
        delay = self.restarts.failed()
        log.warning("supervisor.child_died", pid=self.proc.pid, process=self.index,
                    signal=_signal_name(signum), restart_in=delay)
        self.proc = None
        self.restart_at = time.monotonic() + delay


def _stop_all(slots: list[_Slot], grace: float) -> int:
    """SIGTERM every running copy and wait for each, up to ``grace`` seconds in all; SIGKILL
    one still running then. The worst exit code of those that exited (1 for one killed)."""
    running = [slot.proc for slot in slots if slot.proc is not None and slot.proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    worst = 0
    for slot in slots:
        if slot.proc is None:
            continue
        try:
            code = slot.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("supervisor.killed", pid=slot.proc.pid, process=slot.index, after=grace,
                      hint="it did not finish its in-flight messages in time; what it held "
                           "unacked goes back to its queue")
            slot.proc.kill()
            slot.proc.wait()
            code = 1
        worst = max(worst, code)  # a signal death while stopping (still importing): 0
    return worst


def _terminate(slots: list[_Slot]) -> None:
    """SIGTERM to each child still running: what a SIGTERM or SIGINT to the supervisor does at
    once (the loop then stops them all, and waits)."""
    for slot in slots:
        proc = slot.proc  # read once: the loop may replace it meanwhile
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
