"""Wait on a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_for"]


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02,
             message: str = "condition") -> None:
    """Return as soon as ``condition()`` is true; AssertionError naming ``message`` once
    ``timeout`` seconds passed without it."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)
