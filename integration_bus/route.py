"""A route as the worker runs it: its queue, compiled pipeline, sinks, retry policy and the
bulkhead settings (group, sink deadline, crash limit)."""

from __future__ import annotations

from dataclasses import dataclass

from integration_bus.connector import Sink
from integration_bus.pipeline import Pipeline
from integration_bus.settings.models import RetryPolicy
from integration_bus.topology import route_queue

__all__ = ["Route"]


@dataclass(frozen=True)
class Route:
    """``from`` patterns are the broker's business (bindings); the worker needs the rest."""

    name: str
    pipeline: Pipeline
    sinks: tuple[Sink, ...]
    retry: RetryPolicy
    #: bulkhead: routes of one group share a consumer, batch loop and sink instances
    group: str = ""
    #: seconds a sink call may take before the worker stops waiting for it
    deadline: float = 30.0
    #: process deaths while handling a message before it is dead-lettered (crashed_worker)
    crash_limit: int = 3

    @property
    def lane(self) -> str:
        """The bulkhead this route runs in (its group, or the route itself)."""
        return self.group or self.name

    @property
    def queue(self) -> str:
        return route_queue(self.name)
