"""The circuit breaker per ERP endpoint: the connector API's :class:`CircuitBreaker`, under the
instance's ``breaker`` config and reporting to ``soap_erp_breaker_state`` (0 closed, 1
half-open, 2 open) and ``soap_erp_breaker_transitions_total``.

A retryable failure (timeout, connection error, 5xx, Server fault, HTML page) counts; any
answer from the ERP (success, business or client fault: the ERP is up) resets the count.
One breaker per endpoint address, shared by every sink and source of the process through a
:class:`BreakerPool` (workers in other processes keep their own). Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from connectors.soap_erp.config import BreakerConfig
from connectors.soap_erp.metrics import SoapMetrics
from integration_bus.connector import BreakerState, CircuitBreaker, CircuitOpen

__all__ = ["BreakerPool", "CircuitBreaker", "CircuitOpen", "endpoint_breaker"]

_GAUGE = {"closed": 0, "half_open": 1, "open": 2}


def endpoint_breaker(endpoint: str, config: BreakerConfig, *, probe_lease: float,
                     metrics: SoapMetrics | None = None,
                     clock: Callable[[], float] = time.monotonic) -> CircuitBreaker:
    """The breaker of ``endpoint`` under ``config``, its state on ``metrics`` when given."""
    on_change: Callable[[BreakerState], None] | None = None
    if metrics is not None:
        gauge = metrics.breaker_state.labels(endpoint)
        gauge.set(0)

        def on_change(state: BreakerState) -> None:
            gauge.set(_GAUGE[state])
            metrics.breaker_transitions.labels(endpoint, state).inc()
    return CircuitBreaker(endpoint, failures=config.failures, open_for=config.open_for / 1000,
                          probe_lease=probe_lease, on_change=on_change, clock=clock)


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
                found = self._breakers[endpoint] = endpoint_breaker(
                    endpoint, config, probe_lease=probe_lease, metrics=metrics)
            return found
