"""The circuit breaker: opens after N consecutive retryable failures, refuses without calling
while open, lets exactly one probe through when half-open; metrics; and an ERP outage through a
route on the real RabbitMQ: no calls while open, one probe per half-open period, nothing lost."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from connectors.soap_erp.breaker import CircuitBreaker, CircuitOpen, endpoint_breaker
from connectors.soap_erp.config import BreakerConfig
from connectors.soap_erp.fakeerp import ErpServer, Injection
from connectors.soap_erp.faults import ErpUnavailable
from connectors.soap_erp.metrics import SoapMetrics
from tests.soap_erp.conftest import MakeSink
from tests.soap_erp.support import bus_running, open_bus, posting, sink_yaml, write_config
from tests.support.probe import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, registry: CollectorRegistry | None = None) -> CircuitBreaker:
    metrics = SoapMetrics(registry) if registry is not None else None
    return endpoint_breaker("http://erp/x", BreakerConfig(failures=3, open_for="10s"),
                            probe_lease=30.0, metrics=metrics, clock=clock)


def test_opens_after_n_consecutive_failures_and_a_success_resets() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(2):
        breaker.admit()
        breaker.failed()
    breaker.admit()
    breaker.succeeded()  # any real answer resets the count
    for _ in range(2):
        breaker.admit()
        breaker.failed()
    assert breaker.state == "closed" and breaker.failures == 2
    breaker.admit()
    breaker.failed()
    assert str(breaker.state) == "open"
    with pytest.raises(CircuitOpen) as caught:
        breaker.admit({"document_number": "IB1"})
    assert caught.value.context["retry_after_ms"] == 10_000
    assert caught.value.context["endpoint"] == "http://erp/x"
    assert caught.value.context["document_number"] == "IB1"
    clock.now += 4
    with pytest.raises(CircuitOpen) as caught:
        breaker.admit()
    assert caught.value.context["retry_after_ms"] == 6_000


def test_half_open_lets_one_probe_through_then_closes_or_opens_again() -> None:
    clock, registry = Clock(), CollectorRegistry()
    breaker = _breaker(clock, registry)
    for _ in range(3):
        breaker.admit()
        breaker.failed()
    clock.now += 10
    assert breaker.admit() is True  # the probe
    assert breaker.state == "half_open"
    with pytest.raises(CircuitOpen, match="probe call is in flight"):
        breaker.admit()
    breaker.failed()  # the probe failed: open for another period
    assert str(breaker.state) == "open"
    with pytest.raises(CircuitOpen):
        breaker.admit()
    clock.now += 10
    assert breaker.admit() is True
    breaker.succeeded()
    assert str(breaker.state) == "closed" and breaker.admit() is False
    gauge = registry.get_sample_value("soap_erp_breaker_state", {"endpoint": "http://erp/x"})
    assert gauge == 0
    opened = registry.get_sample_value("soap_erp_breaker_transitions_total",
                                       {"endpoint": "http://erp/x", "state": "open"})
    half = registry.get_sample_value("soap_erp_breaker_transitions_total",
                                     {"endpoint": "http://erp/x", "state": "half_open"})
    assert (opened, half) == (2, 2)


def test_a_probe_whose_caller_vanished_is_given_up_after_its_lease() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.admit()
        breaker.failed()
    clock.now += 10
    assert breaker.admit() is True  # ... and its caller never reports
    clock.now += 29
    with pytest.raises(CircuitOpen):
        breaker.admit()
    clock.now += 2
    assert breaker.admit() is True


def test_exactly_one_of_many_threads_gets_the_probe() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.admit()
        breaker.failed()
    clock.now += 10
    start = threading.Barrier(16)
    results: list[bool | None] = []

    def attempt() -> None:
        start.wait()
        try:
            results.append(breaker.admit())
        except CircuitOpen:
            results.append(None)

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results.count(True) == 1 and results.count(None) == 15


def test_no_calls_while_open_and_one_probe_at_the_sink(erp: ErpServer,
                                                      make_sink: MakeSink) -> None:
    sink = make_sink(failures=3, open_for="400ms", extra="\n    concurrency: 4")
    breaker = sink._breaker
    erp.plan.set(Injection(mode="server_fault", operation="PostStockAdjustment"))
    # Given three retryable failures in a row
    for n in range(3):
        with pytest.raises(ErpUnavailable):
            sink.deliver(posting(n))
    assert breaker.state == "open" and erp.state.count("PostStockAdjustment") == 3
    # When more postings come while it is open, Then none reaches the ERP
    outcomes = sink.deliver_many([posting(n) for n in range(10, 20)])
    assert all(isinstance(o, CircuitOpen) for o in outcomes), outcomes
    assert erp.state.count("PostStockAdjustment") == 3
    # When the open period is over and the ERP is still down: one probe, then open again
    wait_for(lambda: breaker.open_for_ms() == 0, timeout=5, message="the probe is due")
    outcomes = sink.deliver_many([posting(n) for n in range(20, 30)])
    assert isinstance(outcomes[0], ErpUnavailable) and outcomes[0].context.get("probe")
    assert all(isinstance(o, CircuitOpen) for o in outcomes[1:])
    assert erp.state.count("PostStockAdjustment") == 4 and breaker.state == "open"
    # When the ERP is back (slow, so calls cannot overlap unnoticed): the probe goes alone
    erp.plan.set(Injection(mode="slow", delay="200ms", operation="PostStockAdjustment"))
    wait_for(lambda: breaker.open_for_ms() == 0, timeout=5, message="the probe is due")
    outcomes = sink.deliver_many([posting(n) for n in range(30, 38)])
    assert outcomes == [None] * 8 and str(breaker.state) == "closed"
    calls = [at for at, op, _ in erp.state.log if op == "PostStockAdjustment"][4:]
    assert len(calls) == 8
    assert all(later - calls[0] >= 0.19 for later in calls[1:])  # nothing beside the probe
    assert erp.state.document_count() == 8


def opening_pause(gaps: list[float]) -> int | None:
    """Where the circuit opened in a run of failing calls (gaps between them, in seconds): the
    first pause of 0.5 s or more after at least three calls, the failures that open it (sink_yaml
    ``failures=3``). A pause before the third call is not the breaker's: on a loaded CI machine
    the first call came 0.86 s before the next three, which then opened it (the lane starts at
    prefetch 1, so its first delivery runs alone)."""
    return next((i for i, gap in enumerate(gaps) if gap >= 0.5 and i >= 2), None)


@pytest.mark.rabbitmq
def test_an_outage_pauses_the_route_probes_once_per_period_and_loses_nothing(
        tmp_path: Path, erp: ErpServer, rabbitmq_url: str) -> None:
    routes = """
  postings:
    from: [erp.stock_posting.requested]
    to: [erp]
    retry: {max_attempts: 10, initial_delay: 100ms}"""
    sinks = sink_yaml(erp.url, failures=3, open_for="800ms", extra="\n    concurrency: 2")
    bus = open_bus(write_config(tmp_path, rabbitmq_url, sinks=sinks, routes=routes))
    # Given the ERP is down (every call gets a Server fault, lookups included)
    erp.plan.set(Injection(mode="server_fault", operation="*"))
    publisher = bus.publisher()
    assert publisher.publish_many([posting(n) for n in range(40)]) == [None] * 40
    publisher.close()
    try:
        with bus_running(bus):
            # When it stays down for three probes, then comes back
            def probes_seen() -> int:  # calls after the circuit opened
                with erp.state.lock:
                    times = [at for at, _, _ in erp.state.log]
                opened = opening_pause([b - a for a, b in itertools.pairwise(times)])
                return len(times) - opened - 1 if opened is not None else 0

            wait_for(lambda: probes_seen() >= 3, timeout=30, message="three failed probes")
            erp.plan.clear()
            back = time.monotonic()
            wait_for(lambda: erp.state.document_count() == 40, timeout=60,
                     message="all 40 posted")
        # Then: the breaker opened after the first failures; while open nothing was called,
        # each half-open period let exactly one probe through (calls >= open_for apart)
        failing = [at for at, _, _ in erp.state.log if at < back]
        gaps = [b - a for a, b in itertools.pairwise(failing)]
        opened = opening_pause(gaps)
        assert opened is not None, gaps
        burst = opened + 1  # the calls before the circuit opened
        assert burst <= 4  # 3 failures open it; 1 more may have been in flight (2 threads)
        assert all(gap >= 0.75 for gap in gaps[burst - 1:]), gaps
        assert len(failing) - burst >= 3  # three probes, one per half-open period
        # and nothing was lost or doubled, no message burnt its attempts
        assert bus.store.dead_letters() == []
        assert sum(erp.state.duplicates.values()) == 0
        assert bus.store.count_events("held", route="postings") >= 1
    finally:
        bus.close()
