"""Prometheus collectors of the ``soap_erp`` connector, registered on the bus's own registry.

``endpoint`` is the address without the password of its user-info (``redact_url``).

- ``soap_erp_calls_total{endpoint, operation, outcome}``: ok, fault_business, fault_client,
  fault_server, fault_other, http_error, html_page, timeout, connection_error, tls_error,
  refused_xml (calls the breaker refused are not counted: no call was made)
- ``soap_erp_call_seconds{endpoint, operation}``: time per call (send to parsed answer)
- ``soap_erp_breaker_state{endpoint}``: 0 closed, 1 half-open, 2 open
- ``soap_erp_breaker_transitions_total{endpoint, state}``: how often it moved to ``state``
- ``soap_erp_lookups_total{endpoint, found}``: document lookups before a resend
"""

from __future__ import annotations

import threading
import weakref
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SoapMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SoapMetrics:
    """One set of collectors per registry: every ``soap_erp`` instance of a bus shares it."""

    # Keyed weakly by the bus's registry: a cache of what was registered there, not state
    # shared between buses (each Bus has its own registry and so its own collectors).
    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, SoapMetrics]] = (
        weakref.WeakKeyDictionary())
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.calls = Counter("soap_erp_calls", "SOAP calls by outcome",
                             ["endpoint", "operation", "outcome"], registry=registry)
        self.seconds = Histogram("soap_erp_call_seconds", "SOAP call time",
                                 ["endpoint", "operation"], buckets=_BUCKETS, registry=registry)
        self.breaker_state = Gauge("soap_erp_breaker_state",
                                   "Circuit breaker: 0 closed, 1 half-open, 2 open",
                                   ["endpoint"], registry=registry)
        self.breaker_transitions = Counter("soap_erp_breaker_transitions",
                                           "Circuit breaker state changes",
                                           ["endpoint", "state"], registry=registry)
        self.lookups = Counter("soap_erp_lookups", "Document lookups by external reference",
                               ["endpoint", "found"], registry=registry)

    @classmethod
    def of(cls, registry: CollectorRegistry) -> SoapMetrics:
        with cls._lock:
            found = cls._by_registry.get(registry)
            if found is None:
                found = cls._by_registry[registry] = cls(registry)
            return found
