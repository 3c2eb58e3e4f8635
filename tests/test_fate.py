"""The decision table of a message's fate (``integration_bus.fate``): pure, no I/O."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

import connectors
import integration_bus
from integration_bus import fate
from integration_bus.errors import (
    BrokerUnavailable,
    BusError,
    CheckFailed,
    CircuitOpen,
    ClaimBusy,
    ConfigError,
    CrashedWorker,
    EnvelopeError,
    MappingError,
    PermanentError,
    RequestError,
    SinkDeadlineExceeded,
    TransientError,
)
from integration_bus.settings.models import RetryPolicy

ROOTS = (ConfigError, RequestError, TransientError, PermanentError)

policies = st.builds(
    lambda attempts, initial, multiplier, extra: RetryPolicy(
        max_attempts=attempts, initial_delay=f"{initial}ms", multiplier=multiplier,
        max_delay=f"{initial + extra}ms"),
    st.integers(1, 100), st.integers(1, 600_000), st.floats(1.0, 10.0), st.integers(0, 3_600_000))
attempts = st.integers(0, 120)
retryable = st.sampled_from([
    TransientError("timeout"), SinkDeadlineExceeded("slow"), BrokerUnavailable("down"),
    ClaimBusy("busy"), ConfigError("late config"), RequestError("odd"),
    RuntimeError("a bug in a sink"), KeyError("x")])
permanent = st.sampled_from([
    PermanentError("4xx"), MappingError("no field"), CheckFailed("money"),
    EnvelopeError("not an envelope")])


def _every_bus_error() -> Iterator[type[BusError]]:
    for package in (integration_bus, connectors):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if module.name.endswith("__main__") or ".migrations" in module.name:
                continue  # a CLI entry point; alembic scripts (need alembic's context)
            importlib.import_module(module.name)
    seen: set[type[BusError]] = set()
    todo = [BusError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen and sub.__module__.split(".")[0] in ("integration_bus",
                                                                    "connectors"):
                seen.add(sub)
                todo.append(sub)
    yield from sorted(seen, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def test_every_bus_error_is_in_exactly_one_class() -> None:
    # Given every BusError the bus and its connectors define
    errors = list(_every_bus_error())
    assert len(errors) > 20
    # Then each is a ConfigError, a RequestError, a TransientError or a PermanentError
    for error in errors:
        if error in ROOTS:
            continue
        assert [r.__name__ for r in ROOTS if issubclass(error, r)] != [], error
        assert sum(issubclass(error, r) for r in ROOTS) == 1, error


def test_the_operator_refusals_are_request_errors() -> None:
    from integration_bus.deadletters.console import EditRefused
    from integration_bus.operators import AccessDenied
    from integration_bus.store.dead_letters import AmbiguousId
    assert all(issubclass(e, RequestError) for e in (AccessDenied, AmbiguousId, EditRefused))


@given(policies, attempts)
def test_no_error_is_delivered(policy: RetryPolicy, attempt: int) -> None:
    assert fate.decide(None, attempt, policy) == fate.Deliver()
    assert fate.decide(None, attempt, policy, filtered=True) == fate.Deliver(filtered=True)
    assert fate.Deliver(filtered=True).label == "filtered"


@given(policies, attempts, permanent)
def test_a_permanent_error_is_dead_lettered_at_once(policy: RetryPolicy, attempt: int,
                                                    error: PermanentError) -> None:
    assert fate.decide(error, attempt, policy) == fate.DeadLetter("error")
    assert fate.decide(error, attempt, policy, filtered=True) == fate.DeadLetter("error")


@given(policies, attempts)
def test_a_crashed_worker_is_dead_lettered_as_such(policy: RetryPolicy, attempt: int) -> None:
    error = CrashedWorker("died 3 times")
    assert fate.decide(error, attempt, policy) == fate.DeadLetter("crashed_worker")


@given(policies, st.one_of(retryable, permanent, st.just(CircuitOpen("open"))))
def test_an_undecodable_delivery_is_dead_lettered(policy: RetryPolicy,
                                                  error: BaseException) -> None:
    assert fate.decide(error, None, policy) == fate.DeadLetter("error")


@given(policies, attempts, retryable)
def test_a_retryable_error_retries_until_max_attempts(policy: RetryPolicy, attempt: int,
                                                      error: BaseException) -> None:
    decided = fate.decide(error, attempt, policy)
    if attempt + 1 >= policy.max_attempts:
        assert decided == fate.DeadLetter("error", exhausted=True)
    else:
        assert decided == fate.Retry(fate.backoff_ms(policy, attempt))
        assert 1 <= decided.delay_ms <= policy.max_delay


def test_the_last_attempt_is_dead_lettered() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay="1s", multiplier=2, max_delay="1m")
    error = TransientError("503")
    assert [fate.decide(error, a, policy) for a in range(4)] == [
        fate.Retry(1000), fate.Retry(2000), fate.DeadLetter("error", exhausted=True),
        fate.DeadLetter("error", exhausted=True)]


@given(policies, st.integers(0, 60))
def test_backoff_grows_and_is_capped(policy: RetryPolicy, attempt: int) -> None:
    assert fate.backoff_ms(policy, attempt) <= fate.backoff_ms(policy, attempt + 1)
    assert policy.initial_delay <= fate.backoff_ms(policy, attempt) <= policy.max_delay
    assert policy.delay_ms(attempt) == fate.backoff_ms(policy, attempt)


@given(policies, attempts, st.integers(-5, 10_000_000))
def test_retry_after_lengthens_a_retry_never_shortens_it(policy: RetryPolicy, attempt: int,
                                                         asked: int) -> None:
    policy = policy.model_copy(update={"max_attempts": 100})
    decided = fate.decide(TransientError("429", retry_after_ms=asked), min(attempt, 98), policy)
    backoff = fate.backoff_ms(policy, min(attempt, 98))
    assert isinstance(decided, fate.Retry)
    assert decided.delay_ms == (min(asked, policy.max_delay) if asked > backoff else backoff)


@given(policies, attempts, st.integers(-5, 10_000_000))
def test_an_open_circuit_holds_for_its_own_time(policy: RetryPolicy, attempt: int,
                                                asked: int) -> None:
    # Whatever the attempt: an open circuit is not the message's fault (no attempt counted)
    decided = fate.decide(CircuitOpen("open", retry_after_ms=asked), attempt, policy)
    assert decided == fate.Hold(min(max(asked, 1), policy.max_delay))


def test_an_open_circuit_without_a_time_holds_for_the_backoff() -> None:
    policy = RetryPolicy(max_attempts=1, initial_delay="750ms", multiplier=2, max_delay="1m")
    assert fate.decide(CircuitOpen("open"), 2, policy) == fate.Hold(3000)


@pytest.mark.parametrize(("first", "then", "kept"), [
    (None, CircuitOpen("o"), "o"),
    (CircuitOpen("o"), TransientError("t"), "t"),
    (TransientError("t"), CircuitOpen("o"), "t"),
    (TransientError("t"), RuntimeError("r"), "t"),  # equal weight: the first stays
    (TransientError("t"), PermanentError("p"), "p"),
    (PermanentError("p"), TransientError("t"), "p"),
    (PermanentError("p"), MappingError("m"), "p"),
])
def test_the_graver_error_decides(first: BaseException | None, then: BaseException,
                                  kept: str) -> None:
    current = then if fate.graver(then, first) else first
    assert str(current) == kept


@pytest.mark.parametrize(("value", "label"), [
    (fate.Deliver(), "delivered"), (fate.Retry(5), "retried"), (fate.Hold(5), "held"),
    (fate.DeadLetter("error"), "dead_lettered")])
def test_fates_are_frozen_values_with_their_journal_label(value: fate.Fate, label: str) -> None:
    assert value.label == label
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, dataclasses.fields(value)[0].name, 1)


@pytest.mark.parametrize(("crashes", "limit", "out"), [(1, 3, False), (2, 3, False),
                                                       (3, 3, True), (4, 3, True),
                                                       (1, 1, True)])
def test_crash_limit(crashes: int, limit: int, out: bool) -> None:
    assert fate.crashed_out(crashes, limit) is out
