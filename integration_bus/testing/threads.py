"""Run a loop in a thread for the length of a ``with`` block, and get its error back."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["running"]


@contextmanager
def running(target: Callable[[threading.Event], None], *, name: str = "bus-test",
            stop_within: float = 30.0) -> Iterator[threading.Event]:
    """Run ``target(stop)`` in a daemon thread while the block runs; on exit set ``stop``, wait
    up to ``stop_within`` seconds for the thread, and re-raise what ``target`` raised.

    Raises AssertionError when the thread is still alive after ``stop_within`` seconds (a loop
    that ignores its stop event is a bug the test should show)."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target(stop)
        except BaseException as exc:  # handed to the test's thread below
            errors.append(exc)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(stop_within)
        assert not thread.is_alive(), f"{name} did not stop within {stop_within} s"
    if errors:
        raise errors[0]
