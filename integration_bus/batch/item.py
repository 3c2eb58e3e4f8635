"""One delivery on its way through a worker batch, and what each of its sink calls came to."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from integration_bus.connector import Sink
from integration_bus.envelope import Envelope
from integration_bus.fate import Fate, decide, graver
from integration_bus.route import Route
from integration_bus.transport import Delivery

__all__ = ["Item", "SinkCall", "SinkResult"]


class SinkResult(enum.Enum):
    """What became of one output bound for one sink (the metric label and journal event)."""

    DELIVERED = "delivered"  # the sink took it
    RECOVERED = "recovered"  # in doubt after a crash; the sink's lookup found it already there
    DUPLICATE = "duplicate"  # the ledger says this key was delivered before
    BUSY = "busy"  # another copy holds the key's claim right now
    FAILED = "failed"  # the sink (or its lookup) raised

    @property
    def done(self) -> bool:
        """The effect is in the target: the message needs nothing more from this sink."""
        return self in (SinkResult.DELIVERED, SinkResult.RECOVERED, SinkResult.DUPLICATE)


@dataclass
class Item:
    """One delivery on its way through a route."""

    delivery: Delivery
    route: Route
    envelope: Envelope | None = None
    outputs: list[Envelope] = field(default_factory=list)
    error: BaseException | None = None
    step: str | None = None
    sink: str | None = None
    fate: Fate | None = None
    mapping_version: str | None = None
    span: Any = None  # the route's span for this delivery (tracing on)
    crash_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def owner(self) -> str:
        assert self.envelope is not None
        return f"{self.envelope.id}#{self.envelope.attempt}"

    def fail(self, error: BaseException, *, step: str | None = None,
             sink: str | None = None) -> None:
        """Keep ``error`` if it outweighs the one recorded before (``fate.graver``)."""
        if graver(error, self.error):
            self.error, self.step, self.sink = error, step, sink

    def decide_fate(self) -> Fate:
        """Ask ``integration_bus.fate`` once everything was tried; remembered in ``fate``."""
        self.fate = decide(self.error,
                           self.envelope.attempt if self.envelope is not None else None,
                           self.route.retry, filtered=not self.outputs)
        return self.fate


@dataclass(frozen=True, slots=True)
class SinkCall:
    """One output of an item bound for one sink, and its result."""

    item: Item
    sink: Sink
    output: Envelope
    result: SinkResult
