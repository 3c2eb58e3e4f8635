"""The order race on the real RabbitMQ with the fake ERP and the fake shop over real HTTP, and
the worker killed (SIGKILL) at saga steps: the same end, no second ERP document, no orphaned
reservation, the customer told once."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from integration_bus.cli.demo import DemoRun, Scenario
from integration_bus.connector import document_reference
from integration_bus.retail.orders.book import SagaBook, SagaRecord
from integration_bus.retail.projection import StockProjection
from tests.support.probe import wait_for

pytestmark = [pytest.mark.rabbitmq]

REPO = Path(__file__).resolve().parents[2]
SCARF, BEANIE, TEE = ("SCARF-RED", Decimal("24.00")), ("BEANIE-GRN", Decimal("18.00")), \
    ("TSHIRT-BLK-M", Decimal("19.99"))


def hold_polls(demo: DemoRun) -> threading.Event:
    """The ERP's change log held still (a poll waits, up to 8 s): the projection lags, as it
    does between two polls. Set the returned event to let polls go on."""
    release = threading.Event()

    def hold(_since: int) -> None:
        release.wait(8.0)

    demo.erp.state.on_changes = hold
    return release


def settled(book: SagaBook, order_id: str) -> SagaRecord | None:
    record = book.get(order_id)
    return record if record is not None and record.state != "running" else None


def notices(demo: DemoRun) -> list[dict[str, Any]]:
    path = demo.state / "notify" / "order_exceptions.jsonl"
    return [orjson.loads(line)["payload"] for line in path.read_bytes().splitlines()] \
        if path.exists() else []


def sales_order_of(book: SagaBook, order_id: str) -> str:
    (key,) = [e.detail["key"] for e in book.timeline(order_id)
              if e.step == "sales_order" and e.detail]
    return document_reference(key, "IS", 26)


@pytest.fixture
def scenario(tmp_path: Path, rabbitmq_url: str) -> Iterator[DemoRun]:
    demo = DemoRun(REPO / "config", tmp_path / "var", Scenario(), broker_url=rabbitmq_url)
    stop = threading.Event()
    with demo.running(stop):
        demo.wait_ready(stop)
        yield demo


def test_the_race_re_sources_cancels_and_back_orders_per_policy(scenario: DemoRun) -> None:
    assert scenario.bus is not None
    book = SagaBook(scenario.bus.store)
    erp, shop = scenario.erp.state, scenario.shop_state
    # Given polls held: what one order takes stays invisible to the gate until the next poll
    release = hold_polls(scenario)
    ids = {}
    try:
        # When two orders each come close together for SCARF (3 at WH-01, 2 at STORE-042),
        # BEANIE (1, nowhere else, no back orders) and SOCK (1, back orders allowed)
        for name, (sku, units, price) in (("a", (*SCARF[:1], 2, SCARF[1])),
                                          ("b", (*SCARF[:1], 2, SCARF[1])),
                                          ("c", (BEANIE[0], 1, BEANIE[1])),
                                          ("d", (BEANIE[0], 1, BEANIE[1])),
                                          ("e", ("SOCK-WHT", 1, Decimal("6.00"))),
                                          ("f", ("SOCK-WHT", 1, Decimal("6.00")))):
            order_id = scenario.send_order([(sku, units, price)], short=False)
            assert order_id is not None
            ids[name] = order_id
            wait_for(functools.partial(settled, book, order_id), timeout=60,
                     message=f"order {name} settles")
    finally:
        release.set()
        erp.on_changes = None
    outcomes = {name: book.get(oid).outcome for name, oid in ids.items()}  # type: ignore[union-attr]
    # Then the first of each pair ships as ordered; the second is re-sourced, cancelled,
    # back-ordered
    assert outcomes == {"a": "fulfilled", "b": "re_sourced", "c": "fulfilled",
                        "d": "cancelled", "e": "fulfilled", "f": "partly_back_ordered"}
    # the ERP: b's units reserved at STORE-042; d's sales order line cancelled, nothing held
    b = book.get(ids["b"])
    assert b is not None
    (line,) = b.saga.lines
    assert [(a.location, a.quantity) for a in line.allocations] == [("STORE-042", "2")]
    assert erp.open_reservations()[document_reference(line.allocations[0].key, "IR", 26)] == \
        (("SCF-RED-01", "1042", "0001"), Decimal(2))
    assert erp.open_lines(sales_order_of(book, ids["d"])) == {}
    assert erp.open_lines(sales_order_of(book, ids["f"])).keys() == {1}
    assert erp.document_count("sales_order") == 6
    # the shop: each exceptional line told what became of it
    statuses = {name: shop.line_statuses.get(ids[name].removeprefix("shopify-"), {})
                for name in ids}
    assert statuses["b"]["SCARF-RED"]["status"] == "re_sourced"
    assert statuses["b"]["SCARF-RED"]["location"] == "STORE-042"
    assert statuses["d"]["BEANIE-GRN"]["status"] == "cancelled"
    assert statuses["f"]["SOCK-WHT"]["status"] == "back_ordered"
    assert statuses["f"]["SOCK-WHT"]["expected_date"]
    assert not statuses["a"] and not statuses["c"] and not statuses["e"]
    # the customer event: once for each exceptional order, never for the others
    wait_for(lambda: len(notices(scenario)) >= 3, timeout=60, message="three order.exception")
    told = sorted(n["order_id"] for n in notices(scenario))
    assert told == sorted([ids["b"], ids["d"], ids["f"]])
    # and the projection follows the ERP again: bus reconcile finds no difference
    projection = StockProjection(scenario.bus.store)
    wait_for(lambda: (level := projection.get("SCF-RED-01", "STORE-042")) is not None
             and level.reserved == 2, timeout=60, message="the projection sees STORE-042's "
                                                          "reservation")
    wait_for(lambda: scenario.reconcile().get("mismatched") == 0, timeout=60,
             message="bus reconcile clean")
