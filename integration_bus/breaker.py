"""A circuit breaker: stop calling a target that is down, probe it once in a while.

States (as a metric gauge: 0, 1, 2)::

    closed ──N consecutive retryable failures──> open ──open_for elapsed──> half-open
      ^                                           ^                            │
      └──────────── the probe succeeded ──────────┴──── the probe failed ──────┘

- **closed**: every call goes through; a retryable failure (timeout, connection error, 5xx)
  adds one to the count, any answer that shows the target is up (a success, a business or
  client error) resets it.
- **open**: :meth:`CircuitBreaker.admit` raises :class:`CircuitOpen` at once, no call is made.
  Its ``retry_after_ms`` is the time until the probe is due: the worker holds the message
  without counting an attempt and pauses the route for that long.
- **half-open**: exactly one caller gets the probe; everyone else is refused (CircuitOpen, asked
  to come back within a second) until it reports. A probe whose caller never reports (it died)
  is given up after ``probe_lease`` seconds.

Thread-safe; one breaker per target, shared by whoever calls that target (a plugin keeps them,
e.g. by address). ``on_change(state)`` is called on every transition (under the breaker's lock:
keep it short — set a gauge, count a transition).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal

from integration_bus.errors import CircuitOpen

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "half_open", "open"]


class CircuitBreaker:
    """The breaker of one target, ``endpoint`` (an address or name: it is named in every
    refusal). Opens after ``failures`` retryable failures in a row, stays open ``open_for``
    seconds, then lets one probe through, given up after ``probe_lease`` seconds. ``clock``
    is monotonic seconds (tests pass their own). Raises ValueError for limits that cannot
    work."""

    def __init__(self, endpoint: str, *, failures: int, open_for: float, probe_lease: float,
                 on_change: Callable[[BreakerState], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or open_for < 0 or probe_lease <= 0:
            raise ValueError(f"breaker {endpoint}: failures >= 1, open_for >= 0 and "
                             f"probe_lease > 0 (got {failures}, {open_for}, {probe_lease})")
        self.endpoint = endpoint
        self._threshold = failures
        self._open_for = open_for
        self._probe_lease = probe_lease
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_since: float | None = None

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    @property
    def failures(self) -> int:
        with self._lock:
            return self._failures

    def _move(self, state: BreakerState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)

    def admit(self, context: Mapping[str, object] | None = None) -> bool:
        """May a call go out now? True if it is the half-open probe, False for a normal call.
        Raises CircuitOpen (context: endpoint, retry_after_ms, plus ``context``) if not.
        The caller then reports the call's end: :meth:`succeeded` or :meth:`failed`."""
        context = dict(context or {})
        with self._lock:
            now = self._clock()
            if self._state == "closed":
                return False
            if self._state == "open":
                due = self._opened_at + self._open_for
                if now < due:
                    raise self._refusal(due - now, context)
                self._move("half_open")
                self._probe_since = None
            if self._probe_since is not None and now - self._probe_since < self._probe_lease:
                # ask again soon: the probe usually answers long before its lease runs out
                raise self._refusal(min(1.0, self._probe_since + self._probe_lease - now),
                                    context, probing=True)
            self._probe_since = now
            return True

    def _refusal(self, seconds: float, context: dict[str, object], *,
                 probing: bool = False) -> CircuitOpen:
        wait = "a probe call is in flight" if probing else "waiting before a probe"
        return CircuitOpen(f"the circuit to {self.endpoint} is open ({wait}; "
                           f"{self._failures} failures in a row)", **{
                               **context, "endpoint": self.endpoint,
                               "retry_after_ms": max(1, math.ceil(seconds * 1000))})

    def succeeded(self) -> None:
        """The target answered (a result, or an error that is not an outage): close and
        reset the count."""
        with self._lock:
            self._failures = 0
            self._probe_since = None
            if self._state != "closed":
                self._move("closed")

    def failed(self) -> None:
        """A retryable failure (outage, timeout, 5xx): count it; open at the threshold; a failed
        probe opens the circuit again for another ``open_for``."""
        with self._lock:
            self._failures += 1
            self._probe_since = None
            if self._state == "half_open" or (self._state == "closed"
                                               and self._failures >= self._threshold):
                self._opened_at = self._clock()
                self._move("open")

    def open_for_ms(self) -> int:
        """Milliseconds until a probe is due (0 when not open)."""
        with self._lock:
            if self._state != "open":
                return 0
            return max(0, math.ceil((self._opened_at + self._open_for - self._clock()) * 1000))
