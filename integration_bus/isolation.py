"""Crash isolation: who is executing what, and a gate that runs a suspect message alone.

A worker process marks the envelopes it is about to execute (``Store.mark_executing``) and
clears the marks when it settles them. A mark left by a process that died names the messages
that were executing at the crash: the next worker runs each of them *alone* — holding the
:class:`IsolationGate` exclusively, so no other lane of the process executes anything meanwhile
— and counts a crash on the message each time a process dies while it runs. A message whose
crash count reaches its route's ``crash_limit`` is dead-lettered (reason ``crashed_worker``)
without being executed again. Healthy messages that merely shared a batch with the poison run
alone once, succeed and are done; only the poison keeps dying alone.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from integration_bus.liveness import holder_alive, process_identity
from integration_bus.store import CrashMarker

__all__ = ["IsolationGate", "crash_entry", "died", "owner_identity"]


def owner_identity() -> str:
    """``host:pid:start:token`` of this worker incarnation: the process identity of
    ``liveness`` (the start time tells a recycled pid apart) plus a token per worker."""
    return f"{process_identity()}:{secrets.token_hex(4)}"


def died(marker: CrashMarker, me: str) -> bool:
    """Whether the worker that left ``marker`` died while executing it.

    Our own mark (a batch this process abandoned after a connection loss) is no crash; nor is
    the mark of a live process on this host (a competing worker still at it). A process on
    another host cannot be checked from here: its mark counts as a crash once the broker
    redelivered the message, which it does only when that worker's connection closed.
    """
    if marker.owner == me:
        return False
    host, pid = [*marker.owner.split(":"), ""][:2]
    if host != process_identity().split(":", 1)[0]:
        return True
    if pid == str(os.getpid()):
        return True  # an earlier incarnation with our pid (a container's pid 1, restarted)
    return not holder_alive(marker.owner)


def crash_entry(marker: CrashMarker, crashes: int) -> dict[str, Any]:
    """One line of a crashed message's history: the execution that never finished."""
    return {"attempt": crashes, "at": marker.started_at.isoformat(), "owner": marker.owner,
            "error_type": "CrashedWorker",
            "message": "the worker process died while handling it"}


class IsolationGate:
    """Shared/exclusive lock over execution in one process: lanes execute batches holding it
    shared; a crash suspect executes holding it exclusively. Writers have priority, but only
    for ``patience`` seconds at a time: a lane stuck in a slow sink call (up to its deadline)
    delays the suspect, not every other lane."""

    def __init__(self, patience: float = 1.0) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self._patience = patience

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    def writer_waiting(self) -> bool:
        """Whether a suspect holds the gate or waits for it (a lane then marks nothing ahead:
        the batch it would mark must not stand marked while a suspect runs alone)."""
        with self._cond:
            return self._writer or self._waiting_writers > 0

    @contextmanager
    def exclusive(self, stop: threading.Event | None = None) -> Iterator[None]:
        self._acquire_exclusive(stop)
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()

    def _acquire_exclusive(self, stop: threading.Event | None) -> None:
        while True:
            with self._cond:
                self._waiting_writers += 1
                until = time.monotonic() + self._patience
                try:
                    while self._writer or self._readers:
                        left = until - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    else:
                        self._writer = True
                        return
                finally:
                    self._waiting_writers -= 1
                    self._cond.notify_all()
            # Readers had the gate for our whole patience: let them run a moment, then again.
            (stop or threading.Event()).wait(self._patience / 2)
