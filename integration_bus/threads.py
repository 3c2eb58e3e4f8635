"""Waiting for threads without going deaf to signals.

CPython runs a Python signal handler only in the main thread, between bytecodes. The kernel
hands a process-wide SIGTERM to any thread that does not block it; when that is not the main
thread, CPython's C handler only flags the signal, and a main thread blocked in an untimed
``Thread.join()`` or ``Event.wait()`` is never woken to run the handler. ``bus worker`` then
ignored its SIGTERM for good (twice in about eight supervised stops in the test suite).
Waiting in slices gives the main thread a bytecode boundary every :data:`SLICE` seconds:
:func:`join_all` for a command's threads, :func:`wait_for_stop` (public to plugins through
``integration_bus.connector``) for a stop event a signal handler sets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

__all__ = ["SLICE", "join_all", "wait_for_stop"]

SLICE = 0.25  # seconds a waiting main thread may take to run a signal handler


def join_all(threads: Iterable[threading.Thread]) -> None:
    """Wait until every one of ``threads`` has ended, in slices of :data:`SLICE` seconds."""
    for thread in threads:
        while thread.is_alive():
            thread.join(SLICE)


def wait_for_stop(stop: threading.Event, timeout: float | None = None) -> bool:
    """``stop.wait(timeout)`` in slices of :data:`SLICE` seconds: what a command's main thread
    calls while its work runs in other threads and a signal handler sets ``stop``. True once
    ``stop`` is set; False when ``timeout`` (None: no limit) passed first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
        if left <= 0:
            return stop.is_set()
        if stop.wait(left):
            return True
