"""The reference scenario's stock (``config/bus.yaml``, docs/scenario.md) as the fake ERP holds
it at the start: what ``bus sim erp`` seeds by default and what ``bus demo`` starts from, so a
by-hand run and the demo agree. SKUs are the ERP's materials; ``mappings/xref`` translates the
stores' and the shop's codes to them and the canonical locations to plants."""

from __future__ import annotations

from connectors.soap_erp.fakeerp.state import ErpState

__all__ = ["SCENARIO_STOCK", "seed_scenario"]

#: (canonical location, plant, storage location) -> {material: on hand}
SCENARIO_STOCK: dict[tuple[str, str, str], dict[str, int]] = {
    ("STORE-042", "1042", "0001"): {"PEN-STB-BLU": 5000, "PEN-STB-RED": 5000,
                                    "CHOC-70-100G": 5000},
    ("STORE-107", "1107", "0001"): {"PEN-STB-BLU": 5000, "PEN-STB-RED": 5000,
                                    "CHOC-70-100G": 5000},
    # the web warehouse: the last hoodie, and the sold-out iPod (orders for it are refused)
    ("WH-01", "2001", "0100"): {"TEE-BLK-M": 60, "TEE-BLK-L": 40, "MUG-WHT-01": 80,
                                "HOOD-GRY-M": 1, "CAP-NVY-01": 25, "APL-IPN-2G": 0},
}


def seed_scenario(state: ErpState) -> int:
    """Seed ``state`` with :data:`SCENARIO_STOCK`; returns the number of stock rows."""
    rows = 0
    for (_, plant, location), stock in SCENARIO_STOCK.items():
        for material, on_hand in stock.items():
            state.seed(material, plant, location, on_hand)
            rows += 1
    return rows
