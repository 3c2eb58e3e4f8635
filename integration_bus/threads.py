"""Waiting for threads without going deaf to signals.

CPython runs a Python signal handler only in the main thread, between bytecodes. The kernel
hands a process-wide SIGTERM to any thread that does not block it; when that is not the main
thread, CPython's C handler only flags the signal, and a main thread blocked in an untimed
``Thread.join()`` or ``Event.wait()`` is never woken to run the handler. ``bus worker`` then
ignored its SIGTERM for good (seen about once in ten supervised stops on a loaded machine).
Waiting in slices gives the main thread a bytecode boundary every :data:`SLICE` seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

__all__ = ["SLICE", "join_all"]

SLICE = 0.25  # seconds a waiting main thread may take to run a signal handler


def join_all(threads: Iterable[threading.Thread]) -> None:
    """Wait until every one of ``threads`` has ended, in slices of :data:`SLICE` seconds."""
    for thread in threads:
        while thread.is_alive():
            thread.join(SLICE)
