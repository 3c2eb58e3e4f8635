"""The circuit breaker of the connector API (a connector using it: tests/soap_erp)."""

from __future__ import annotations

import pytest

from integration_bus.connector import BreakerState, CircuitBreaker, CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def _opened(clock: Clock, changes: list[BreakerState]) -> CircuitBreaker:
    breaker = CircuitBreaker("shop-api", failures=2, open_for=5.0, probe_lease=3.0,
                             on_change=changes.append, clock=clock)
    for _ in range(2):
        assert breaker.admit() is False
        breaker.failed()
    return breaker


def test_the_threshold_opens_it_and_refusals_name_the_target_and_the_wait() -> None:
    clock, changes = Clock(), []
    breaker = _opened(clock, changes)
    assert breaker.state == "open" and changes == ["open"]
    clock.now += 2
    with pytest.raises(CircuitOpen) as caught:
        breaker.admit({"envelope_id": "E1"})
    assert caught.value.context == {"envelope_id": "E1", "endpoint": "shop-api",
                                    "retry_after_ms": 3000}
    assert breaker.open_for_ms() == 3000


def test_a_success_in_between_resets_the_count() -> None:
    breaker = CircuitBreaker("t", failures=2, open_for=1.0, probe_lease=1.0, clock=Clock())
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    assert breaker.state == "closed" and breaker.failures == 1


def test_one_probe_after_the_open_period_then_closed_on_success() -> None:
    clock, changes = Clock(), []
    breaker = _opened(clock, changes)
    clock.now += 5
    assert breaker.admit() is True
    with pytest.raises(CircuitOpen, match="probe call is in flight"):
        breaker.admit()
    breaker.succeeded()
    assert breaker.admit() is False
    assert changes == ["open", "half_open", "closed"]


def test_a_failed_probe_opens_it_for_another_period() -> None:
    clock, changes = Clock(), []
    breaker = _opened(clock, changes)
    clock.now += 5
    assert breaker.admit() is True
    breaker.failed()
    assert breaker.state == "open" and breaker.open_for_ms() == 5000


def test_a_probe_never_reported_is_given_up_after_its_lease() -> None:
    clock = Clock()
    breaker = _opened(clock, [])
    clock.now += 5
    assert breaker.admit() is True
    clock.now += 3.5
    assert breaker.admit() is True


def test_limits_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="failures >= 1"):
        CircuitBreaker("t", failures=0, open_for=1.0, probe_lease=1.0)
