"""A message's fate: the one place that decides deliver, retry, hold or dead-letter.

Pure: :func:`decide` maps (error, attempt, route policy) to a typed, frozen :data:`Fate`, with
no I/O and no clock, so the whole table is tested without a broker or a store. The worker's
batch (``integration_bus.batch``) asks it once per delivery and acts on the answer; the retry
tier a delay lands in is the topology's business (``Topology.tier_for``).

What each error means for the message (``errors`` draws the tree)::

    error                            envelope   attempt + 1        fate
    none                             decoded    any                Deliver
    CircuitOpen                      decoded    any                Hold(delay)
    CrashedWorker                    any        any                DeadLetter(crashed_worker)
    PermanentError (any other)       any        any                DeadLetter(error)
    anything                         undecoded  -                  DeadLetter(error)
    TransientError, ConfigError,     decoded    >= max_attempts    DeadLetter(error, exhausted)
      RequestError, foreign error
    the same                         decoded    < max_attempts     Retry(delay)

A ``ConfigError`` or ``RequestError`` met at message time, and an exception from outside the
tree (a bug), are retried like a transient error and then dead-lettered with their traceback:
the fix lies outside the message (a config reload, a code fix), so a later attempt may pass.

The delay of a retry is the policy's exponential backoff (:func:`backoff_ms`), raised to the
target's own ``retry_after_ms`` (HTTP 429 Retry-After) when that is longer, and capped at the
policy's ``max_delay``. A hold waits for the circuit's ``retry_after_ms`` and keeps the attempt:
an open circuit is not the message's fault.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from integration_bus.errors import (
    BusError,
    CircuitOpen,
    CrashedWorker,
    PermanentError,
)

__all__ = [
    "DeadLetter",
    "DeadLetterReason",
    "Deliver",
    "Fate",
    "Hold",
    "Kind",
    "Policy",
    "Retry",
    "backoff_ms",
    "crashed_out",
    "decide",
    "graver",
    "kind_of",
    "retry_delay_ms",
]

DeadLetterReason = Literal["error", "crashed_worker"]


class Policy(Protocol):
    """A route's retry policy as the decision needs it (``settings.models.RetryPolicy``)."""

    @property
    def max_attempts(self) -> int: ...

    @property
    def initial_delay(self) -> int: ...

    @property
    def multiplier(self) -> float: ...

    @property
    def max_delay(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Deliver:
    """Nothing failed: the outputs were delivered (or the pipeline ``filtered`` them all)."""

    filtered: bool = False

    @property
    def label(self) -> str:
        return "filtered" if self.filtered else "delivered"


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again: the next attempt, through the retry tier closest to ``delay_ms``."""

    delay_ms: int
    label: ClassVar[str] = "retried"


@dataclass(frozen=True, slots=True)
class Hold:
    """A sink's circuit is open: the same attempt waits ``delay_ms`` and the route pauses."""

    delay_ms: int
    label: ClassVar[str] = "held"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Into the dead-letter store now. ``exhausted``: a retryable error that used up the
    policy's ``max_attempts`` (its message says "gave up after N attempt(s)")."""

    reason: DeadLetterReason
    exhausted: bool = False
    label: ClassVar[str] = "dead_lettered"


Fate = Deliver | Retry | Hold | DeadLetter


class Kind(enum.Enum):
    """What an error asks of the runtime, ordered by weight (see :func:`graver`)."""

    HOLD = 1  # a target known to be down: wait, no attempt counted
    RETRY = 2  # may pass later
    PERMANENT = 3  # retrying cannot help


def kind_of(error: BaseException) -> Kind:
    """The class of ``error``: every ``BusError`` subclass falls in exactly one."""
    if isinstance(error, CircuitOpen):
        return Kind.HOLD
    if isinstance(error, PermanentError):
        return Kind.PERMANENT
    # TransientError; ConfigError and RequestError met at message time; an exception from
    # outside the tree (a bug): retried, then dead-lettered with the traceback.
    return Kind.RETRY


def graver(error: BaseException, than: BaseException | None) -> bool:
    """Whether ``error`` decides a message's fate over the error it already has: a permanent
    failure beats a retryable one, which beats an open circuit (a message waits for a circuit
    only when nothing else went wrong). The first error of equal weight stays."""
    return than is None or kind_of(error).value > kind_of(than).value


def backoff_ms(policy: Policy, attempt: int) -> int:
    """Exponential backoff before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
    return int(min(policy.initial_delay * policy.multiplier ** attempt, policy.max_delay))


def retry_delay_ms(error: BaseException, attempt: int, policy: Policy) -> int:
    """How long the message waits: the backoff, or the target's ``retry_after_ms`` when it is
    longer (always, for an open circuit), at least 1 ms and capped at ``max_delay``."""
    delay = backoff_ms(policy, attempt)
    asked = error.context.get("retry_after_ms") if isinstance(error, BusError) else None
    if isinstance(asked, int | float) and (asked > delay or isinstance(error, CircuitOpen)):
        delay = int(min(max(asked, 1), policy.max_delay))
    return delay


def decide(error: BaseException | None, attempt: int | None, policy: Policy, *,
           filtered: bool = False) -> Fate:
    """The fate of one message. ``attempt`` is the envelope's (from 0), None when the
    delivery could not be decoded into an envelope; ``filtered``: the pipeline produced no
    output (only read when there is no error)."""
    if error is None:
        return Deliver(filtered=filtered)
    if attempt is None:
        return DeadLetter("error")
    kind = kind_of(error)
    if kind is Kind.HOLD:
        return Hold(retry_delay_ms(error, attempt, policy))
    if kind is Kind.PERMANENT:
        return DeadLetter("crashed_worker" if isinstance(error, CrashedWorker) else "error")
    if attempt + 1 >= policy.max_attempts:
        return DeadLetter("error", exhausted=True)
    return Retry(retry_delay_ms(error, attempt, policy))


def crashed_out(crashes: int, crash_limit: int) -> bool:
    """Whether a message that was executing at ``crashes`` process deaths is dead-lettered
    (``CrashedWorker``, reason ``crashed_worker``) instead of being run alone once more."""
    return crashes >= crash_limit
