"""The backoff policy of the connector API: delays, cap, jitter, and waiting in a loop."""

from __future__ import annotations

import random
import threading

import pytest

from integration_bus.connector import Backoff


def test_delays_double_from_first_up_to_the_cap() -> None:
    policy = Backoff(first=0.5, cap=3.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_a_long_outage_stays_at_the_cap_without_overflow() -> None:
    assert Backoff(first=1.0, cap=30.0, factor=10.0).delay(100_000) == 30.0


def test_the_cap_bounds_even_the_first_delay() -> None:
    assert Backoff(first=5.0, cap=2.0).delay(1) == 2.0


def test_jitter_shortens_each_delay_by_at_most_its_fraction() -> None:
    policy = Backoff(first=1.0, cap=8.0, jitter=0.5)
    rng = random.Random(7)
    delays = [policy.delay(4, rng) for _ in range(200)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 100  # spread, not one value


def test_the_same_seed_gives_the_same_delays() -> None:
    policy = Backoff(first=0.1, cap=10.0, jitter=1.0)
    first = policy.start(random.Random(3))
    second = policy.start(random.Random(3))
    assert [first.failed() for _ in range(6)] == [second.failed() for _ in range(6)]


def test_a_state_counts_failures_and_starts_over_after_a_success() -> None:
    state = Backoff(first=0.25, cap=1.0).start()
    assert [state.failed() for _ in range(4)] == [0.25, 0.5, 1.0, 1.0]
    state.reset()
    assert state.failures == 0 and state.failed() == 0.25


def test_wait_returns_true_at_once_when_the_loop_is_stopped() -> None:
    stop = threading.Event()
    stop.set()
    state = Backoff(first=3600.0, cap=3600.0).start()
    assert state.wait(stop) is True  # an hour's delay, cut short by stop
    assert state.failures == 1


def test_wait_returns_false_when_the_delay_ran_out() -> None:
    state = Backoff(first=0.0, cap=0.0).start()  # zero delays: try again at once
    assert state.wait(threading.Event()) is False


@pytest.mark.parametrize(("options", "problem"), [
    ({"first": -1.0, "cap": 1.0}, "negative"),
    ({"first": 1.0, "cap": 2.0, "factor": 0.5}, "shrink"),
    ({"first": 1.0, "cap": 2.0, "jitter": 1.5}, "fraction"),
])
def test_a_policy_that_cannot_work_is_refused(options: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Backoff(**options)


def test_a_delay_before_any_failure_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one failure"):
        Backoff(first=1.0, cap=2.0).delay(0)
