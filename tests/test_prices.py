"""The price flow on RabbitMQ with the fake ERP and the fake shop over real HTTP: an ERP price
change reaches the shop and the store's price file once; a future-dated price waits in the
hold until its day (a controllable clock), then goes out once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from integration_bus.cli.demo import DemoRun, Scenario
from integration_bus.store.schema import held_messages
from tests.support.probe import wait_for

pytestmark = [pytest.mark.rabbitmq]

REPO = Path(__file__).resolve().parent.parent


def test_a_price_reaches_the_shop_and_the_store_once_and_a_future_one_waits_for_its_day(
        tmp_path: Path, rabbitmq_url: str) -> None:
    now = [datetime(2026, 12, 5, 9, 0, tzinfo=UTC).timestamp()]
    demo = DemoRun(REPO / "config", tmp_path / "var", Scenario(), broker_url=rabbitmq_url,
                   clock=lambda: now[0])
    demo.environ["PRICE_RELEASE_INTERVAL"] = "200ms"
    stop = threading.Event()
    with demo.running(stop):
        demo.wait_ready(stop)
        assert demo.bus is not None
        erp, shop = demo.erp.state, demo.shop_state
        today = datetime.fromtimestamp(now[0], UTC).date()
        # Given the ERP changes the T-shirt's web price today, a pen's price at store 042
        # today, and the T-shirt's price again from ten days ahead
        erp.set_price("TEE-BLK-M", "2001", "0100", "21.50", "EUR", today)
        erp.set_price("PEN-STB-BLU", "1042", "0001", "1.99", "EUR", today)
        erp.set_price("TEE-BLK-M", "2001", "0100", "17.00", "EUR", today + timedelta(days=10))

        def held() -> int:
            with demo.bus.store.db.begin() as conn:  # type: ignore[union-attr]
                return int(conn.execute(select(func.count()).select_from(
                    held_messages)).scalar_one())

        # Then today's prices reach the shop and the store's download folder
        wait_for(lambda: shop.prices.get(("TSHIRT-BLK-M", "WH-01")) == ("21.50", "EUR", 1),
                 timeout=60, message="today's web price at the shop")
        folder = demo.state / "pos" / "out" / "STORE-042"
        wait_for(lambda: len(list(folder.glob("PRICE_STORE-042_*.CSV"))) == 1, timeout=60,
                 message="the store's price file")
        (price_file,) = folder.glob("PRICE_STORE-042_*.CSV")
        assert "PEN-STB-BLU" in price_file.read_text() and "1.99" in price_file.read_text()
        # and the future price waits in the hold, while the release keeps polling
        wait_for(lambda: held() == 1, timeout=60, message="the future price held")
        polls = erp.count("GetPriceChanges")
        wait_for(lambda: erp.count("GetPriceChanges") >= polls + 2, timeout=60,
                 message="more price polls")
        assert shop.prices[("TSHIRT-BLK-M", "WH-01")] == ("21.50", "EUR", 1)
        # When its day comes
        now[0] += timedelta(days=10).total_seconds()
        # Then it goes out, once
        wait_for(lambda: shop.prices.get(("TSHIRT-BLK-M", "WH-01")) == ("17.00", "EUR", 3),
                 timeout=60, message="the new price on its day")
        wait_for(lambda: held() == 0, timeout=30, message="the hold emptied")
        prices = {k: v for k, v in shop.effects.items() if k.startswith("price:")}
        assert prices == {"price:TSHIRT-BLK-M@WH-01#1": 1, "price:TSHIRT-BLK-M@WH-01#3": 1}
        assert len(list(folder.glob("PRICE_STORE-042_*.CSV"))) == 1
