"""A real Sink for tests: records every delivery and fails on cue.

The ``probe`` connector delivers into a :class:`Target` shared with the test. It is a genuine
plugin (config model, constructor, registry) so the runtime treats it like any other sink.
Payload fields steer it: ``fail_times`` (raise TransientError that many times per key before
succeeding), ``permanent`` (raise PermanentError), ``boom`` (raise a plain exception).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from integration_bus.connector import (
    ConnectorContext,
    ConnectorPlugin,
    Envelope,
    PermanentError,
    TransientError,
)
from integration_bus.registry import Registry
from integration_bus.testing import running as running
from integration_bus.testing import wait_for as wait_for


class Target:
    """What the sink's 'external system' saw: deliveries and every attempt, by key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.effects: dict[str, int] = defaultdict(int)
        self.attempts: dict[str, list[float]] = defaultdict(list)
        self.envelopes: list[Envelope] = []
        #: called (on the sink's thread) before each effect, with the number of effects so
        #: far: a test may hold the sink there
        self.before_effect: Callable[[int], object] | None = None

    def count(self) -> int:
        with self.lock:
            return len(self.effects)

    def duplicates(self) -> dict[str, int]:
        with self.lock:
            return {k: n for k, n in self.effects.items() if n > 1}


class ProbeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    target: str = "default"


class ProbeSink:
    def __init__(self, config: ProbeConfig, context: ConnectorContext, target: Target) -> None:
        self.name = context.instance
        self._target = target

    def deliver(self, envelope: Envelope) -> None:
        payload = envelope.payload if isinstance(envelope.payload, dict) else {}
        key = envelope.idempotency_key
        with self._target.lock:
            self._target.attempts[key].append(time.monotonic())
            tries = len(self._target.attempts[key])
        if payload.get("permanent"):
            raise PermanentError("the target refused the document: invalid store code",
                                 field="store")
        if payload.get("boom"):
            raise RuntimeError("unexpected failure in the target client")
        if tries <= int(payload.get("fail_times", 0)):
            raise TransientError(f"target timed out (try {tries})")
        if self._target.before_effect is not None:
            self._target.before_effect(self._target.count())
        with self._target.lock:
            self._target.effects[key] += 1
            self._target.envelopes.append(envelope)

    def close(self) -> None:
        pass


def probe_plugin(target: Target) -> ConnectorPlugin:
    return ConnectorPlugin(name="probe", summary="test sink recording deliveries",
                           sink_config=ProbeConfig,
                           create_sink=lambda cfg, ctx: ProbeSink(cfg, ctx, target))


def registry_with(*plugins: ConnectorPlugin) -> Registry:
    """The installed plugins plus ``plugins`` (which replace installed ones of the same name);
    installed plugins registered by factory stay factories (each bus builds its own)."""
    return Registry.from_entry_points().replaced(*plugins)

