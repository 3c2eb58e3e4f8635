"""The demo's price changes (docs/scenario.md, price flow): the ERP changes three prices when
the demo starts — the T-shirt's web price and a pen's price at store 042 from today, and the
T-shirt's web price again from ten days ahead, which the bus holds until that day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from integration_bus.store.held import HeldMessages

if TYPE_CHECKING:
    from integration_bus.cli.demo import DemoRun

__all__ = ["price_checks", "seed_prices"]


def seed_prices(demo: DemoRun) -> None:
    today = datetime.fromtimestamp(demo.clock(), UTC).date()
    erp = demo.erp.state
    erp.set_price("TEE-BLK-M", "2001", "0100", "21.50", "EUR", today)
    erp.set_price("PEN-STB-BLU", "1042", "0001", "1.99", "EUR", today)
    erp.set_price("TEE-BLK-M", "2001", "0100", "17.00", "EUR", today + timedelta(days=10))


def price_checks(demo: DemoRun) -> tuple[dict[str, bool], dict[str, Any]]:
    """The demo's checks about prices, and its ``prices`` figures."""
    assert demo.bus is not None
    held = HeldMessages(demo.bus.store.db).count()
    shop = demo.shop_state
    applied = {k: v for k, v in shop.effects.items() if k.startswith("price:")}
    folder = demo.state / "pos" / "out" / "STORE-042"
    files = list(folder.glob("PRICE_STORE-042_*.CSV")) if folder.exists() else []
    checks = {
        "today's prices reached the shop and the store once, the future one is held":
            applied == {"price:TSHIRT-BLK-M@WH-01#1": 1} and len(files) == 1 and held == 1,
    }
    return checks, {"shop_prices": len(applied), "store_price_files": len(files),
                    "held_until_their_day": held}
