"""A backoff policy: how long to wait after each failure in a row, and the wait itself.

The one implementation of "try again later, waiting longer each time" for the bus's loops
(reconnecting lanes, restarting threads, the outbox relay, the supervisor) and for plugins
(a source retrying a publish, a client backing off from a 5xx)::

    backoff = Backoff(first=0.5, cap=30.0).start()
    while not stop.is_set():
        if try_once():
            backoff.reset()
        elif backoff.wait(stop):      # waits the next delay; True once ``stop`` is set
            break

Delays grow by ``factor`` from ``first`` up to ``cap`` (seconds). ``jitter`` (0 to 1) takes up
to that fraction off each delay at random, so many clients that failed together do not come
back together; a delay never exceeds ``cap``. A policy is a frozen value (put one in a config
model or a constant); :meth:`Backoff.start` makes the counter one loop owns.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

__all__ = ["Backoff", "BackoffState"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays ``first``, ``first * factor``, ... capped at ``cap`` seconds, each shortened by
    up to ``jitter`` of itself at random (zero delays: try again at once). Raises ValueError
    for a policy that cannot work (a negative delay, a factor below 1, a jitter outside
    0..1)."""

    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.first < 0 or self.cap < 0:
            raise ValueError(f"backoff delays cannot be negative (first={self.first}, "
                             f"cap={self.cap})")
        if self.factor < 1:
            raise ValueError(f"a backoff factor below 1 would shrink the delays ({self.factor})")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff jitter is a fraction from 0 to 1 ({self.jitter})")

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait after ``failures`` failures in a row (1 = the first failure), in seconds.
        ``rng`` draws the jitter (required when the policy has jitter)."""
        if failures < 1:
            raise ValueError(f"a delay follows at least one failure ({failures})")
        # grow step by step: factor ** (failures - 1) would overflow after a long outage
        delay = self.first
        for _ in range(failures - 1):
            if delay >= self.cap:
                break
            delay *= self.factor
        delay = min(delay, self.cap)
        if self.jitter:
            if rng is None:
                raise ValueError("a backoff with jitter needs a random source")
            delay -= delay * self.jitter * rng.random()
        return delay

    def start(self, rng: random.Random | None = None) -> BackoffState:
        """A fresh counter for one loop (``rng``: the jitter's source; a new one by default)."""
        return BackoffState(self, rng if rng is not None else random.Random())


class BackoffState:
    """The failures in a row of one loop under a :class:`Backoff`. Not thread-safe: one per
    loop."""

    def __init__(self, policy: Backoff, rng: random.Random) -> None:
        self.policy = policy
        self.failures = 0
        self._rng = rng

    def failed(self) -> float:
        """Count one more failure; the delay to wait before the next try, in seconds."""
        self.failures += 1
        return self.policy.delay(self.failures, self._rng)

    def reset(self) -> None:
        """A success: the next failure waits ``first`` again."""
        self.failures = 0

    def wait(self, stop: threading.Event) -> bool:
        """Count a failure and wait its delay, or less if ``stop`` is set meanwhile. Returns
        True when ``stop`` is set (the loop should end)."""
        return stop.wait(self.failed())
