"""Simulators: fakes of the systems the bus connects (an ERP, a web shop, POS lanes), for tests,
``bus sim NAME`` and ``bus demo``.

A package registers a :class:`Simulator` under the entry-point group
``integration_bus.simulators``, apart from the connectors' group: loading the connectors (every
``bus`` command, every :class:`~integration_bus.runtime.Bus`) or importing a production
connector never imports a fake. A simulator has a name, a summary, optionally the click command
``bus sim NAME`` runs, and optionally ``create``: a function building the fake, stopped, in the
reference scenario's opening state (docs/scenario.md) — what ``bus demo`` starts and drives.

Lifecycle of what ``create`` returns: ``start()`` serves (a server binds its port when built, so
its address is known before), ``stop()`` stops and releases everything; ``stop()`` is
idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

from integration_bus.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    import click

__all__ = ["SIMULATOR_GROUP", "SimulatedSystem", "Simulator", "Simulators"]

SIMULATOR_GROUP = "integration_bus.simulators"


class SimulatedSystem(Protocol):
    """A fake of a system, as ``Simulator.create`` builds it (stopped)."""

    def start(self) -> object: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Simulator:
    """A fake of a system: what a package registers under ``integration_bus.simulators``."""

    name: str
    summary: str
    #: the click command ``bus sim NAME`` runs (None: the simulator is driven by code only)
    command: click.Command | None = None
    #: builds the fake, stopped, in the reference scenario's opening state (``bus demo``)
    create: Callable[[], SimulatedSystem] | None = None


class Simulators:
    """Simulators by name. A test builds its own with the simulators it needs."""

    def __init__(self, simulators: Iterable[Simulator] = ()) -> None:
        self._simulators: dict[str, Simulator] = {}
        for simulator in simulators:
            self.add(simulator)

    @classmethod
    def from_entry_points(cls) -> Simulators:
        """Load every simulator of the ``integration_bus.simulators`` group.

        Raises ConfigError naming the entry point when one does not load or is not a
        Simulator."""
        found = cls()
        for ep in entry_points(group=SIMULATOR_GROUP):
            try:
                loaded = ep.load()
            except Exception as exc:  # a broken third-party package must name itself
                raise ConfigError(f"simulator {ep.name!r} ({ep.value}) failed to load: "
                                  f"{exc}") from exc
            if not isinstance(loaded, Simulator):
                raise ConfigError(f"entry point {ep.name!r} ({ep.value}) is not a Simulator")
            found.add(loaded)
        return found

    def add(self, simulator: Simulator) -> None:
        if simulator.name in self._simulators:
            raise ConfigError(f"two simulators are named {simulator.name!r}")
        self._simulators[simulator.name] = simulator

    def get(self, name: str) -> Simulator:
        """The simulator called ``name``; ConfigError with a did-you-mean otherwise."""
        try:
            return self._simulators[name]
        except KeyError:
            raise ConfigError(f"unknown simulator {name!r}",
                              hint=did_you_mean(name, self._simulators)) from None

    def create(self, name: str) -> SimulatedSystem:
        """A new fake of simulator ``name``, stopped; ConfigError if it offers none."""
        simulator = self.get(name)
        if simulator.create is None:
            raise ConfigError(f"simulator {name!r} cannot be built by code (no create)")
        return simulator.create()

    def commands(self) -> dict[str, click.Command]:
        """The ``bus sim`` commands, by simulator name."""
        return {name: sim.command for name, sim in sorted(self._simulators.items())
                if sim.command is not None}

    def names(self) -> list[str]:
        return sorted(self._simulators)

    def __contains__(self, name: object) -> bool:
        return name in self._simulators
