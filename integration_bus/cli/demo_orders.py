"""The demo's order race and its order checks (``bus demo``, docs/scenario.md flow 2).

The race: two close orders that together exceed a location's stock between two ERP polls. The
demo holds the ERP's change log still while it sends them one after the other (each in its own
gate batch, the second once the first is decided), so the projection — and the gate — still see
the stock the first order took: three races, one per outcome of the sourcing policy:

- SCARF-RED: 3 at WH-01, 2 at STORE-042; 2 + 2 ordered: the second is re-sourced to STORE-042.
- BEANIE-GRN: 1 at WH-01 only; 1 + 1: the second cannot be sourced and may not be
  back-ordered: cancelled (its sales order line cancelled, the shop told).
- SOCK-WHT: 1 at WH-01 only, back orders allowed: the second is back-ordered.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from integration_bus.connector import document_reference
from integration_bus.retail.orders.book import SagaBook

if TYPE_CHECKING:
    from integration_bus.cli.demo import DemoRun

__all__ = ["RACES", "RACE_SEED", "order_checks", "play_races"]

#: extra ERP stock for the races: (location, plant, storage location) -> {sku: on hand}
RACE_SEED = {("WH-01", "2001", "0100"): {"SCF-RED-01": 3, "BNE-GRN-01": 1, "SCK-WHT-01": 1},
             ("STORE-042", "1042", "0001"): {"SCF-RED-01": 2}}
#: (shop SKU, units per order, price, the second order's expected outcome)
RACES = [("SCARF-RED", 2, Decimal("24.00"), "re_sourced"),
         ("BEANIE-GRN", 1, Decimal("18.00"), "cancelled"),
         ("SOCK-WHT", 1, Decimal("6.00"), "partly_back_ordered")]


def _final(book: SagaBook, order_id: str) -> bool:
    record = book.get(order_id)
    return record is not None and record.state != "running"


def play_races(demo: DemoRun, stop: threading.Event, timeout: float = 30.0) -> None:
    """Send each race's two orders while the ERP's change log is held (see the module doc)."""
    from integration_bus.cli.demo import _wait

    assert demo.bus is not None
    book = SagaBook(demo.bus.store)
    release = threading.Event()
    erp = demo.erp.state

    def hold(_since: int) -> None:  # a poll waits: the projection lags behind the ERP
        release.wait(8.0)

    erp.on_changes = hold
    try:
        for sku, units, price, _ in RACES:
            for _ in range(2):
                if stop.is_set():  # Ctrl-C: no new order (a refused one is retried for 6 s)
                    return
                order_id = demo.send_order([(sku, units, price)], short=False)
                if order_id is not None:
                    _wait(functools.partial(_final, book, order_id), stop, timeout,
                          f"the saga of race order {order_id} did not settle")
    finally:
        release.set()
        erp.on_changes = None


def order_checks(demo: DemoRun, accepted: int) -> tuple[dict[str, bool], dict[str, int]]:
    """The demo's checks about orders, and its ``order_exceptions`` figures."""
    assert demo.bus is not None
    records = SagaBook(demo.bus.store).list(limit=100_000)
    erp = demo.erp.state
    outcomes = Counter(r.outcome for r in records if r.state == "final")
    waiting = sum(1 for r in records if r.state == "waiting")
    exceptional = [r for r in records if r.state == "waiting" or r.outcome != "fulfilled"]
    figures = {"total": len(exceptional),
               "resolved": sum(1 for r in exceptional if r.state == "final"),
               "re_sourced": outcomes["re_sourced"],
               "back_ordered": outcomes["partly_back_ordered"],
               "cancelled": outcomes["cancelled"] + outcomes["partly_cancelled"],
               "waiting_for_a_person": waiting}
    held = {document_reference(a.key, "IR", 26) for r in records for ln in r.saga.lines
            for a in ln.allocations if a.state == "reserved"}
    notices_file = demo.state / "notify" / "order_exceptions.jsonl"
    told = Counter(orjson.loads(line)["payload"]["order_id"] if b'"payload"' in line
                   else orjson.loads(line)["order_id"]
                   for line in (notices_file.read_bytes().splitlines()
                                if notices_file.exists() else []) if line.strip())
    from integration_bus.mapping.xref import load_tables

    shop_sku = load_tables(demo.config_dir.parent / "mappings" / "xref")["shop_sku"].column(None)
    consistent = True
    for record in (r for r in records if r.state == "final"):
        saga = record.saga
        shop_id = saga.order_id.removeprefix("shopify-")
        shop_lines = demo.shop_state.line_statuses.get(shop_id, {})
        for line in saga.lines:
            said = shop_lines.get(shop_sku.get(line.sku, line.sku), {}).get("status")
            moved = any(a.location != "WH-01" for a in line.allocations
                        if a.state == "reserved")
            expected = line.status if line.status in ("cancelled", "back_ordered") else \
                "re_sourced" if moved else "fulfilled" if saga.round and said else None
            consistent &= said == expected
        # told once per outcome: a back order later sourced or cancelled is told again
        consistent &= told[saga.order_id] == 0 if (record.outcome == "fulfilled"
                                                   and not saga.round) \
            else 1 <= told[saga.order_id] <= saga.round + 1
    checks = {
        "one sales order per accepted order (or dead letter)":
            erp.document_count("sales_order") == accepted,
        "every order final, or waiting for a person with a reason":
            all(r.state == "final" or (r.state == "waiting" and r.reason) for r in records),
        "the race: re-sourced, cancelled and back-ordered per policy":
            all(outcomes[outcome] >= 1 or (outcome == "partly_back_ordered" and any(
                r.saga.round for r in records)) for *_, outcome in RACES),
        "no reservation the sagas do not hold (none orphaned)":
            set(erp.open_reservations()) == held,
        "every order consistent across ERP, shop and customer event (told once)":
            consistent and _sales_lines_agree(demo, records),
    }
    return checks, figures


def _sales_lines_agree(demo: DemoRun, records: list[Any]) -> bool:
    """Each final order's open ERP sales order lines are exactly its lines not cancelled (the
    sales order found by the reference its saga recorded)."""
    assert demo.bus is not None
    book = SagaBook(demo.bus.store)
    for record in records:
        if record.state != "final":
            continue
        keys = [e.detail["key"] for e in book.timeline(record.saga.order_id)
                if e.step == "sales_order" and e.detail and "key" in e.detail]
        if len(keys) != 1:
            return False
        try:
            open_lines = demo.erp.state.open_lines(document_reference(keys[0], "IS", 26))
        except KeyError:
            return False
        if set(open_lines) != {ln.line_no for ln in record.saga.lines
                               if ln.status != "cancelled"}:
            return False
    return True
