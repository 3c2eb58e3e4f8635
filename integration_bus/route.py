"""A route as the worker runs it: its queue, compiled pipeline, sinks and retry policy."""

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

    @property
    def queue(self) -> str:
        return route_queue(self.name)
