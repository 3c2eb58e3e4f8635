"""The fake ERP as a simulator (entry point ``erp`` of ``integration_bus.simulators``):
``bus sim erp``, and for ``bus demo`` a server holding the reference scenario's stock."""

from __future__ import annotations

from connectors.soap_erp.fakeerp.cli import erp_command
from connectors.soap_erp.fakeerp.scenario import seed_scenario
from connectors.soap_erp.fakeerp.server import ErpServer
from connectors.soap_erp.fakeerp.state import ErpState
from integration_bus.connector import Simulator

__all__ = ["ScenarioErp", "simulator"]


class ScenarioErp(ErpServer):
    """The fake ERP on a free loopback port (bound now, served from ``start()``), its state
    seeded with the reference scenario's stock; ``seeded``: how many stock rows."""

    def __init__(self) -> None:
        state = ErpState()
        self.seeded = seed_scenario(state)
        super().__init__(state)


simulator = Simulator(
    name="erp", summary="a fake retail ERP over SOAP (stock, postings, documents by reference, "
                        "change log, fault injection) for tests and the demo",
    command=erp_command, create=ScenarioErp)
