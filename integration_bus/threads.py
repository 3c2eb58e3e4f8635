"""Waiting for threads without going deaf to signals.

CPython runs a Python signal handler only in the main thread, between bytecodes. The kernel
hands a process-wide SIGTERM to any thread that does not block it; when that is not the main
thread, CPython's C handler only flags the signal, and a main thread blocked in an untimed
``Thread.join()`` or ``Event.wait()`` is never woken to run the handler. ``bus worker`` then
ignored its SIGTERM for good (twice in about eight supervised stops in the test suite).
Waiting in slices gives the main thread a bytecode boundary every :data:`SLICE` seconds:
:func:`join_all` for a command's threads, :func:`wait_for_stop` (public to plugins through
``integration_bus.connector``) for a stop event a signal handler sets.

The handler that sets that event must not take a lock: it runs between two bytecodes of the main
thread, which may hold the very lock it wants. ``Event.set()`` takes the event's (non-reentrant)
lock, so a handler calling it deadlocked the main thread when the signal came while the main
thread was inside ``set()`` or ``wait()`` of the same event, e.g. in the first handler when a
second SIGTERM followed at once (``bus worker --processes 2`` sends its children two). The
handler of :func:`stop_on_signals` only writes to a pipe; a thread of its own sets the event.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import structlog

__all__ = ["SLICE", "join_all", "stop_on_signals", "wait_for_stop"]

log = structlog.get_logger("integration_bus.threads")

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


@contextmanager
def stop_on_signals(stop: threading.Event | None = None, *,
                    signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
                    then: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """Within the block, each of ``signals`` sets ``stop`` (a new event unless given) and then
    calls ``then`` (from a thread of its own, never from the signal handler); the handlers of
    before come back after it. Outside the main thread, where Python cannot install handlers,
    it only yields ``stop``.

    The handler writes the signal to a pipe and returns, taking no lock, so a signal can come at
    any moment, as often as it likes: while the main thread waits on ``stop``, sets it, or is in
    the middle of handling the signal before."""
    stop = threading.Event() if stop is None else stop
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def handler(signum: int, _frame: object) -> None:
        try:
            os.write(write_end, b"!")
        except OSError:  # a full pipe holds thousands of signals not yet relayed: one more is moot
            pass

    def relay() -> None:
        try:
            while os.read(read_end, 512):
                stop.set()
                if then is not None:
                    try:
                        then()
                    except Exception:  # the next signal calls it again
                        log.exception("signals.then_failed", then=repr(then))
        finally:
            os.close(read_end)

    relay_thread = threading.Thread(target=relay, name="signals", daemon=True)
    relay_thread.start()
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            # None: a handler installed outside Python, which Python cannot put back
            signal.signal(sig, signal.SIG_DFL if old is None else old)
        os.close(write_end)  # the relay reads the end of the pipe and ends
        relay_thread.join(SLICE)
