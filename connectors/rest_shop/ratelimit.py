"""Client-side pacing per shop: a token bucket plus a "not before" gate set by 429 answers.

``ShopPacer.reserve()`` says how long to wait before the next request may go out: until the
gate a ``Retry-After`` set (no attempt before the time the shop allowed), and until a token is
free. Thread-safe: every sink instance of a plugin object that talks to the same shop shares
one pacer (see ``PacerPool``), so worker threads together stay under the configured rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

__all__ = ["PacerPool", "ShopPacer", "parse_retry_after"]


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date (wall clock
    ``now``). None if absent or unreadable; never negative."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - now)


class ShopPacer:
    """Token bucket (``rate`` per second, ``burst`` tokens) and a not-before gate."""

    def __init__(self, rate: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._not_before = 0.0
        self._lock = threading.Lock()

    def tighten(self, rate: float, burst: int) -> None:
        with self._lock:
            self.rate = min(self.rate, rate)
            self.burst = min(self.burst, float(burst))
            self._tokens = min(self._tokens, self.burst)

    def hold_until(self, delay: float) -> None:
        """The shop said: nothing for ``delay`` seconds (a 429's Retry-After, already capped)."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + delay)

    def gate_remaining(self) -> float:
        with self._lock:
            return max(0.0, self._not_before - self._clock())

    def reserve(self) -> float:
        """Take a token; the seconds to wait before using it (0 = go now)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            token_wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
            return max(token_wait, self._not_before - now)

    def give_back(self) -> None:
        """Return a reserved token that was not used (the caller gave up waiting)."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + 1.0)


class PacerPool:
    """Pacers by shop name, owned by one plugin object (so by one bus's sinks: each bus builds
    its own plugin from ``make_plugin``)."""

    def __init__(self) -> None:
        self._pacers: dict[str, ShopPacer] = {}
        self._lock = threading.Lock()

    def get(self, shop: str, rate: float, burst: int) -> ShopPacer:
        """The pacer of ``shop``; sinks naming the same shop share it, at the lowest rate and
        burst any of them configured."""
        with self._lock:
            pacer = self._pacers.get(shop)
            if pacer is None:
                pacer = self._pacers[shop] = ShopPacer(rate, burst)
            pacer.tighten(rate, burst)
            return pacer
