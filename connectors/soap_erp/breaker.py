"""A circuit breaker per ERP endpoint: stop calling a system that is down, probe it once.

States (``soap_erp_breaker_state``: 0, 1, 2)::

    closed ──N consecutive retryable failures──> open ──open_for elapsed──> half-open
      ^                                           ^                            │
      └──────────── the probe succeeded ──────────┴──── the probe failed ──────┘

- **closed**: every call goes through; a retryable failure (timeout, connection error, 5xx,
  Server fault, HTML page) adds one to the count, any answer from the ERP (success, business or
  client fault: the ERP is up) resets it.
- **open**: :meth:`CircuitBreaker.admit` raises :class:`CircuitOpen` at once, no call is made.
  Its ``retry_after_ms`` is the time until the probe is due: the worker holds the message
  without counting an attempt and pauses the route for that long.
- **half-open**: exactly one caller gets the probe; everyone else is refused (CircuitOpen, asked
  to come back within a second) until it reports. A probe whose caller never reports (it died)
  is given up after ``probe_lease`` (connect + operation timeout + 1 s).

One breaker per endpoint address, shared by every sink and source of the process through a
:class:`BreakerPool` (workers in other processes keep their own). Thread-safe.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Literal

from connectors.soap_erp.config import BreakerConfig
from connectors.soap_erp.metrics import SoapMetrics
from integration_bus.connector import CircuitOpen

__all__ = ["BreakerPool", "CircuitBreaker", "CircuitOpen", "State"]

State = Literal["closed", "half_open", "open"]
_GAUGE = {"closed": 0, "half_open": 1, "open": 2}


class CircuitBreaker:
    """The breaker of one endpoint. ``clock`` is monotonic seconds (tests pass their own)."""

    def __init__(self, endpoint: str, config: BreakerConfig, *, probe_lease: float,
                 metrics: SoapMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self._threshold = config.failures
        self._open_for = config.open_for / 1000
        self._probe_lease = probe_lease
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_since: float | None = None
        if metrics is not None:
            metrics.breaker_state.labels(endpoint).set(0)

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    @property
    def failures(self) -> int:
        with self._lock:
            return self._failures

    def _move(self, state: State) -> None:
        self._state = state
        if self._metrics is not None:
            self._metrics.breaker_state.labels(self.endpoint).set(_GAUGE[state])
            self._metrics.breaker_transitions.labels(self.endpoint, state).inc()

    def admit(self, **context: object) -> bool:
        """May a call go out now? True if it is the half-open probe, False for a normal call.
        Raises CircuitOpen (context: endpoint, retry_after_ms, plus ``context``) if not."""
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
        """The ERP answered (a result, or a fault that is not an outage): close and reset."""
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


class BreakerPool:
    """Breakers by endpoint address: every sink and source of one plugin object (so of one bus)
    share them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, endpoint: str, config: BreakerConfig, *, probe_lease: float,
            metrics: SoapMetrics | None = None) -> CircuitBreaker:
        """The breaker of ``endpoint`` (made with ``config`` by its first user)."""
        with self._lock:
            found = self._breakers.get(endpoint)
            if found is None:
                found = self._breakers[endpoint] = CircuitBreaker(
                    endpoint, config, probe_lease=probe_lease, metrics=metrics)
            return found
