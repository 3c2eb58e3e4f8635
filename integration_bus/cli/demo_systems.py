"""The fake systems ``bus demo`` drives, as the demo sees them, found through the
``integration_bus.simulators`` entry points (never imported from a connector package).

``erp``, ``shop`` and ``pos`` must each build (``Simulator.create``) an object with what the
protocols below name; the demo refuses to start with a ConfigError naming the simulator
otherwise. The fakes shipped with the built-in connectors provide them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sized
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from integration_bus.errors import ConfigError
from integration_bus.simulator import SimulatedSystem, Simulators

__all__ = ["DemoErp", "DemoLanes", "DemoShop", "DemoSystems", "ErpBook", "ShopBook"]


class ErpBook(Protocol):
    """The fake ERP's data, as the demo seeds and checks it."""

    #: called with the cursor of each stock-change poll before it is answered (holds a poll)
    on_changes: Callable[[int], None] | None

    @property
    def changes(self) -> Sized:
        """The change log (it grows while stock moves)."""

    @property
    def duplicates(self) -> Mapping[str, int]:
        """Repeated postings refused, by kind."""

    def seed(self, material: str, plant: str, location: str, on_hand: Decimal | int) -> None:
        ...

    def set_price(self, material: str, plant: str, location: str, price: Decimal | str,
                  currency: str, valid_from: date) -> object: ...

    def document_count(self, kind: str | None = None) -> int: ...

    def open_reservations(self) -> Mapping[str, object]:
        """Reservation references not released."""

    def open_lines(self, order: str) -> Mapping[int, object]:
        """Open lines of the sales order ``order`` by line number; KeyError if unknown."""


@runtime_checkable
class DemoErp(SimulatedSystem, Protocol):
    """The fake ERP: served at ``url``, holding the scenario's stock (``seeded`` rows)."""

    @property
    def url(self) -> str: ...

    @property
    def seeded(self) -> int: ...

    @property
    def state(self) -> ErpBook: ...


class ShopBook(Protocol):
    """The fake shop's data, as the demo checks it."""

    @property
    def inventory(self) -> Mapping[tuple[str, str], object]:
        """Inventory levels the bus set, by (sku, location)."""

    @property
    def line_statuses(self) -> Mapping[str, Mapping[str, Mapping[str, Any]]]:
        """Order id -> shop SKU -> what the bus said of that line (``status``, ...)."""

    @property
    def effects(self) -> Mapping[str, int]:
        """Effects applied, by key (``price:...``)."""


@runtime_checkable
class DemoShop(SimulatedSystem, Protocol):
    """The fake shop: its API at ``url`` (accepting ``token``), the scenario's SKUs with
    prices, and signed order webhooks sent on request."""

    @property
    def url(self) -> str: ...

    @property
    def token(self) -> str: ...

    @property
    def skus(self) -> Mapping[str, Decimal]: ...

    @property
    def state(self) -> ShopBook: ...

    def send_webhook(self, url: str, *, secret: bytes, topic: str, payload: dict[str, Any],
                     event_id: str) -> int | None:
        """The status the receiver answered last (after retries), None if it did not."""


@runtime_checkable
class DemoLanes(SimulatedSystem, Protocol):
    """POS tills dropping end-of-day files into a watched inbox."""

    def drop_daily_file(self, inbox: Path, layout: Path, *, name: str, store: str,
                        records: int, seed: int, day: date, seq: int) -> None: ...


class DemoSystems:
    """The demo's fakes, each built (stopped) from its simulator."""

    def __init__(self, simulators: Simulators) -> None:
        built: list[SimulatedSystem] = []
        try:
            erp = _built(simulators, "erp", built)
            shop = _built(simulators, "shop", built)
            lanes = _built(simulators, "pos", built)
            if not isinstance(erp, DemoErp):
                raise _unfit("erp", "DemoErp")
            if not isinstance(shop, DemoShop):
                raise _unfit("shop", "DemoShop")
            if not isinstance(lanes, DemoLanes):
                raise _unfit("pos", "DemoLanes")
        except BaseException:
            for system in built:  # a server binds its port when built
                system.stop()
            raise
        self.erp: DemoErp = erp
        self.shop: DemoShop = shop
        self.lanes: DemoLanes = lanes


def _built(simulators: Simulators, name: str, built: list[SimulatedSystem]) -> SimulatedSystem:
    system = simulators.create(name)
    built.append(system)
    return system


def _unfit(name: str, protocol: str) -> ConfigError:
    return ConfigError(f"simulator {name!r} does not offer what bus demo drives",
                       hint=f"see integration_bus.cli.demo_systems.{protocol}")
