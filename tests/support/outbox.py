"""The outbox relay in tests: run it until what a poll staged has settled."""

from __future__ import annotations

from typing import Any

from integration_bus.runtime import Bus
from integration_bus.testing import bus_running
from tests.support.probe import wait_for


def relay_to_dead_letters(bus: Bus, count: int, *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Run ``bus``'s relay and workers (no sources) until ``count`` dead letters are stored and
    nothing waits in the outbox; returns the dead letters."""
    with bus_running(bus, sources=[]):
        wait_for(lambda: len(bus.store.dead_letters()) == count
                 and not bus.store.outbox_waiting(), timeout=timeout,
                 message=f"{count} dead letters from the relay, the outbox empty")
    return bus.store.dead_letters()
