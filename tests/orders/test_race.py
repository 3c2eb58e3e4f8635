"""The order race on the real RabbitMQ with the fake ERP and the fake shop over real HTTP, and
the worker killed (SIGKILL) at saga steps: the same end, no second ERP document, no orphaned
reservation, the customer told once."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft7Validator

from integration_bus.cli.demo import DemoRun, Scenario
from integration_bus.connector import document_reference
from integration_bus.errors import ConfigError
from integration_bus.retail.orders.book import SagaBook, SagaRecord
from integration_bus.retail.projection import StockProjection
from integration_bus.store import Store
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
    # d's cancelled line cancelled at the shop and its money given back, once
    assert shop.cancellations[ids["d"].removeprefix("shopify-")] == {
        "1": {"sku": "BEANIE-GRN", "quantity": 1, "refunded": "18.00"}}
    assert sum(n for k, n in shop.effects.items() if k.startswith("refund:")) == 1
    # the customer event: once for each exceptional order, never for the others
    wait_for(lambda: len(notices(scenario)) >= 3, timeout=60, message="three order.exception")
    told = sorted(n["order_id"] for n in notices(scenario))
    assert told == sorted([ids["b"], ids["d"], ids["f"]])
    schema = orjson.loads((REPO / "schemas/canonical/order_exception.v1.json").read_bytes())
    for notice in notices(scenario):  # each follows the canonical schema
        Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER).validate(notice)
    # and the projection follows the ERP again: bus reconcile finds no difference
    projection = StockProjection(scenario.bus.store)
    wait_for(lambda: (level := projection.get("SCF-RED-01", "STORE-042")) is not None
             and level.reserved == 2, timeout=60, message="the projection sees STORE-042's "
                                                          "reservation")
    wait_for(lambda: scenario.reconcile().get("mismatched") == 0, timeout=60,
             message="bus reconcile clean")


class BusProcess:
    """``bus run`` of the scenario config in its own process (RabbitMQ, SQLite store), against
    the fakes of a DemoRun in this process; killed with SIGKILL and started again at will."""

    def __init__(self, demo: DemoRun, log: Path) -> None:
        self.demo, self.log = demo, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "integration_bus", "run", "--config-dir",
                 str(REPO / "config"), "--migrate"], cwd=REPO, stdout=out, stderr=out,
                env={**self.demo.environ, "BUS_LOG_LEVEL": "warning"})

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def kill_after(target: Any, method: str, bus: BusProcess) -> list[bool]:
    """Wrap ``target.method``: once armed, the bus process is SIGKILLed right after the ERP
    did the call's effect (before the bus hears the answer). Returns the arming flag."""
    armed = [False]
    original: Callable[..., Any] = getattr(target, method)

    def killing(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        if armed[0]:
            armed[0] = False
            bus.kill9()
        return out

    setattr(target, method, killing)
    return armed


@pytest.mark.slow
@pytest.mark.parametrize("method", ["create_sales_order", "reserve", "cancel_lines"])
def test_the_worker_killed_at_a_saga_step_ends_the_same(tmp_path: Path, rabbitmq_url: str,
                                                        method: str) -> None:
    demo = DemoRun(REPO / "config", tmp_path / "var", Scenario(), broker_url=rabbitmq_url)
    erp, shop = demo.erp.state, demo.shop_state
    bus = BusProcess(demo, tmp_path / "bus.log")
    demo.erp.start()
    demo.shop.start()
    store: Store | None = None
    try:
        bus.start()
        wait_for(lambda: _at_head(demo), timeout=60, message="the bus migrated its store")
        store = Store.open(demo.environ["BUS_STORE_URL"], migrate=False)
        book, projection = SagaBook(store), StockProjection(store)
        wait_for(lambda: projection.get("BNE-GRN-01", "WH-01") is not None, timeout=60,
                 message="the first ERP poll reached the projection")
        # Given polls held, one order takes WH-01's only BEANIE
        release = hold_polls(demo)
        first = demo.send_order([(BEANIE[0], 1, BEANIE[1])], short=False)
        assert first is not None
        wait_for(functools.partial(settled, book, first), timeout=60, message="first settles")
        # When the next order (BEANIE + TEE) runs, and the worker is killed right after the
        # ERP did the armed step
        armed = kill_after(erp, method, bus)
        armed[0] = True
        second = demo.send_order([(BEANIE[0], 1, BEANIE[1]), (TEE[0], 1, TEE[1])], short=False)
        assert second is not None
        wait_for(bus.dead, timeout=60, message=f"the worker is killed after {method}")
        release.set()
        erp.on_changes = None
        bus.start()
        # Then the order ends as it would have: BEANIE cancelled, TEE reserved
        wait_for(functools.partial(settled, book, second), timeout=90,
                 message="the order settles after the restart")
        record = book.get(second)
        assert record is not None
        assert record.outcome == "partly_cancelled", record
        assert [ln.status for ln in record.saga.lines] == ["cancelled", "sourced"]
        # no second ERP document (repeats were found by reference), nothing orphaned
        assert erp.document_count("sales_order") == 2
        assert erp.document_count("reservation") == 2
        assert erp.document_count("sales_order_change") == 1
        held = {document_reference(a.key, "IR", 26) for r in book.list()
                for ln in r.saga.lines for a in ln.allocations if a.state == "reserved"}
        assert set(erp.open_reservations()) == held and len(held) == 2
        assert erp.open_lines(sales_order_of(book, second)).keys() == {2}
        # the shop told, the customer told once
        wait_for(lambda: len(notices(demo)) >= 1, timeout=60, message="order.exception")
        assert [n["order_id"] for n in notices(demo)] == [second]
        statuses = shop.line_statuses[second.removeprefix("shopify-")]
        assert statuses["BEANIE-GRN"]["status"] == "cancelled"
    finally:
        bus.stop()
        if store is not None:
            store.close()
        demo.shop.stop()  # with the shop's webhook sender
        demo.erp.stop()


def _at_head(demo: DemoRun) -> bool:
    if not Path(demo.environ["BUS_STORE_URL"].removeprefix("sqlite:///")).exists():
        return False
    try:
        Store.open(demo.environ["BUS_STORE_URL"], migrate=False).close()
    except ConfigError:  # not migrated yet
        return False
    return True


def test_an_order_for_a_person_waits_as_a_dead_letter_and_their_choice_continues_it(
        tmp_path: Path, rabbitmq_url: str) -> None:
    from click.testing import CliRunner

    from integration_bus.cli import cli

    demo = DemoRun(REPO / "config", tmp_path / "var", Scenario(), broker_url=rabbitmq_url)
    demo.environ["ORDERS_OTHERWISE"] = "ask"  # the policy asks instead of cancelling
    stop = threading.Event()
    with demo.running(stop):
        demo.wait_ready(stop)
        assert demo.bus is not None
        book = SagaBook(demo.bus.store)
        release = hold_polls(demo)
        try:
            first = demo.send_order([(BEANIE[0], 1, BEANIE[1])], short=False)
            assert first is not None
            wait_for(functools.partial(settled, book, first), timeout=60, message="first")
            # Given the second BEANIE order cannot be sourced anywhere and may not wait
            second = demo.send_order([(BEANIE[0], 1, BEANIE[1])], short=False)
            assert second is not None
            wait_for(functools.partial(settled, book, second), timeout=60, message="second")
        finally:
            release.set()
            demo.erp.state.on_changes = None
        record = book.get(second)
        assert record is not None and record.state == "waiting"
        # Then it is a business dead letter of its own group, listing the options
        wait_for(lambda: any(d["error_type"] == "OrderNeedsDecision"
                             for d in demo.bus.store.dead_letters()), timeout=30,  # type: ignore[union-attr]
                 message="the dead letter")
        (letter,) = [d for d in demo.bus.store.dead_letters()
                     if d["error_type"] == "OrderNeedsDecision"]
        assert letter["route"] == "order_fulfilment"
        assert "options: back_order, cancel_line, cancel_order" in letter["message"], letter
        runner, env = CliRunner(), {k: v for k, v in demo.environ.items()}
        shown = runner.invoke(cli, ["orders", "show", second, "--config-dir",
                                    str(REPO / "config")], env=env)
        assert shown.exit_code == 0 and "waiting for a person" in shown.output, shown.output
        listed = runner.invoke(cli, ["orders", "list", "--state", "waiting", "--json",
                                     "--config-dir", str(REPO / "config")], env=env)
        assert listed.exit_code == 0, listed.output
        assert [row["order_id"] for row in orjson.loads(listed.output)] == [second]
        # When a person chooses back_order and replays it
        decided = runner.invoke(cli, ["orders", "decide", second, "back_order",
                                      "--config-dir", str(REPO / "config")], env=env)
        assert decided.exit_code == 0, decided.output
        refused = runner.invoke(cli, ["orders", "decide", first, "back_order",
                                      "--config-dir", str(REPO / "config")], env=env)
        assert refused.exit_code != 0 and "not waiting" in refused.output
        replayed = runner.invoke(cli, ["dlq", "replay", "--route", "order_fulfilment",
                                       "--error-type", "OrderNeedsDecision", "--text", second,
                                       "--config-dir", str(REPO / "config")], env=env)
        assert replayed.exit_code == 0, replayed.output
        # Then the saga goes on from there: back-ordered, the shop and the customer told
        wait_for(lambda: (r := book.get(second)) is not None and r.state == "final",
                 timeout=60, message="the order continues to its end")
        final = book.get(second)
        assert final is not None and final.outcome == "partly_back_ordered"
        wait_for(lambda: len(notices(demo)) == 1, timeout=60, message="order.exception")
        status = demo.shop_state.line_statuses[second.removeprefix("shopify-")]
        assert status["BEANIE-GRN"]["status"] == "back_ordered"


def test_cancelling_the_whole_order_releases_what_it_reserved_over_http(
        tmp_path: Path, rabbitmq_url: str) -> None:
    demo = DemoRun(REPO / "config", tmp_path / "var", Scenario(), broker_url=rabbitmq_url)
    demo.environ["ORDERS_PARTIAL"] = "cancel_order"  # one line cancelled cancels the order
    stop = threading.Event()
    with demo.running(stop):
        demo.wait_ready(stop)
        assert demo.bus is not None
        book, erp = SagaBook(demo.bus.store), demo.erp.state
        release = hold_polls(demo)
        try:
            first = demo.send_order([(BEANIE[0], 1, BEANIE[1])], short=False)
            assert first is not None
            wait_for(functools.partial(settled, book, first), timeout=60, message="first")
            # When an order of a TEE (in stock) and the BEANIE nobody has comes next
            second = demo.send_order([(TEE[0], 2, TEE[1]), (BEANIE[0], 1, BEANIE[1])],
                                     short=False)
            assert second is not None
            wait_for(functools.partial(settled, book, second), timeout=60, message="second")
        finally:
            release.set()
            erp.on_changes = None
        record = book.get(second)
        assert record is not None and record.outcome == "cancelled"
        # Then the TEE's reservation was made and released through ReleaseReservation, the
        # sales order has no open line, and WH-01's TEE stock is whole again
        assert erp.count("ReleaseReservation") >= 1
        (tee,) = [ln for ln in record.saga.lines if ln.sku == "TEE-BLK-M"]
        assert [a.state for a in tee.allocations] == ["released"]
        assert erp.open_reservations().keys() == {
            document_reference(a.key, "IR", 26) for r in book.list()
            for ln in r.saga.lines for a in ln.allocations if a.state == "reserved"}
        assert erp.open_lines(sales_order_of(book, second)) == {}
        ((_, row),) = erp.query("TEE-BLK-M", "2001", "0100")
        assert row.reserved == 0
        timeline = [(e.step, e.decision) for e in book.timeline(second)]
        assert ("release", "done") in timeline and ("cancel_lines", "done") in timeline


def back_order_one_sock(demo: DemoRun, book: SagaBook) -> str:
    """The first SOCK order takes WH-01's only unit; the next one, passing the lagging gate,
    is back-ordered (SOCK may wait). Returns the back-ordered order's id."""
    release = hold_polls(demo)
    try:
        first = demo.send_order([("SOCK-WHT", 1, Decimal("6.00"))], short=False)
        assert first is not None
        wait_for(functools.partial(settled, book, first), timeout=60, message="first")
        second = demo.send_order([("SOCK-WHT", 1, Decimal("6.00")), (TEE[0], 1, TEE[1])],
                                 short=False)
        assert second is not None
        wait_for(functools.partial(settled, book, second), timeout=60, message="second")
    finally:
        release.set()
        demo.erp.state.on_changes = None
    record = book.get(second)
    assert record is not None and record.outcome == "partly_back_ordered", record
    return second


def test_a_back_order_is_reserved_when_stock_arrives_over_http(tmp_path: Path,
                                                                rabbitmq_url: str) -> None:
    demo = DemoRun(REPO / "config", tmp_path / "var", Scenario(), broker_url=rabbitmq_url)
    demo.environ["ORDERS_RECHECK_INTERVAL"] = "500ms"
    stop = threading.Event()
    with demo.running(stop):
        demo.wait_ready(stop)
        assert demo.bus is not None
        book, erp = SagaBook(demo.bus.store), demo.erp.state
        # Given an order whose SOCK line is back-ordered (the customer told once)
        order = back_order_one_sock(demo, book)
        wait_for(lambda: len(notices(demo)) == 1, timeout=60, message="the first notice")
        # When two SOCKs arrive at WH-01 (a goods receipt the ERP poll brings to the projection)
        erp.post_movement("GR-SOCK-1", ("SCK-WHT-01", "2001", "0100"), "101", Decimal(2))
        # Then the order's recheck reserves the line there: the order is fulfilled
        wait_for(lambda: (r := book.get(order)) is not None and r.outcome == "fulfilled",
                 timeout=60, message="the back order reserved when stock arrived")
        record = book.get(order)
        assert record is not None and record.saga.round == 1
        sock = record.saga.lines[0]
        assert [(a.location, a.state) for a in sock.allocations] == [("WH-01", "reserved")]
        held = {document_reference(a.key, "IR", 26) for r in book.list()
                for ln in r.saga.lines for a in ln.allocations if a.state == "reserved"}
        assert set(erp.open_reservations()) == held and len(held) == 3
        assert erp.open_lines(sales_order_of(book, order)).keys() == {1, 2}
        # the shop and the customer told what became of the line, once more
        wait_for(lambda: len(notices(demo)) == 2, timeout=60, message="the second notice")
        assert [n["outcome"] for n in notices(demo)] == ["partly_back_ordered", "fulfilled"]
        status = demo.shop_state.line_statuses[order.removeprefix("shopify-")]
        assert status["SOCK-WHT"]["status"] == "fulfilled"
        steps = [(e.step, e.decision) for e in book.timeline(order)]
        assert ("recheck", "round 1") in steps
        wait_for(lambda: demo.reconcile().get("mismatched") == 0, timeout=60,
                 message="bus reconcile clean")


def test_a_back_order_past_its_wait_is_cancelled_and_refunded_over_http(
        tmp_path: Path, rabbitmq_url: str) -> None:
    demo = DemoRun(REPO / "config", tmp_path / "var", Scenario(), broker_url=rabbitmq_url)
    demo.environ["ORDERS_RECHECK_INTERVAL"] = "500ms"
    demo.environ["ORDERS_BACK_ORDER_WAIT"] = "3s"
    stop = threading.Event()
    with demo.running(stop):
        demo.wait_ready(stop)
        assert demo.bus is not None
        book, erp, shop = SagaBook(demo.bus.store), demo.erp.state, demo.shop_state
        order = back_order_one_sock(demo, book)
        # When no SOCK arrives within back_order.wait
        wait_for(lambda: (r := book.get(order)) is not None and r.outcome == "partly_cancelled",
                 timeout=60, message="the back order cancelled at its deadline")
        # Then the SOCK line is cancelled on the sales order and at the shop, where the money
        # paid for it is given back once; the TEE still ships; the customer told
        assert erp.open_lines(sales_order_of(book, order)).keys() == {2}
        shop_id = order.removeprefix("shopify-")
        assert shop.cancellations[shop_id] == {
            "1": {"sku": "SOCK-WHT", "quantity": 1, "refunded": "6.00"}}
        assert shop.effects[f"refund:{shop_id}:SOCK-WHT"] == 1
        assert shop.line_statuses[shop_id]["SOCK-WHT"]["status"] == "cancelled"
        wait_for(lambda: len(notices(demo)) == 2, timeout=60, message="the second notice")
        assert [n["outcome"] for n in notices(demo)] == ["partly_back_ordered",
                                                         "partly_cancelled"]


@pytest.mark.slow
def test_the_worker_killed_while_a_back_order_is_reserved_ends_the_same(
        tmp_path: Path, rabbitmq_url: str) -> None:
    demo = DemoRun(REPO / "config", tmp_path / "var", Scenario(), broker_url=rabbitmq_url)
    demo.environ["ORDERS_RECHECK_INTERVAL"] = "500ms"
    erp = demo.erp.state
    bus = BusProcess(demo, tmp_path / "bus.log")
    demo.erp.start()
    demo.shop.start()
    store: Store | None = None
    try:
        bus.start()
        wait_for(lambda: _at_head(demo), timeout=60, message="the bus migrated its store")
        store = Store.open(demo.environ["BUS_STORE_URL"], migrate=False)
        book, projection = SagaBook(store), StockProjection(store)
        wait_for(lambda: projection.get("SCK-WHT-01", "WH-01") is not None, timeout=60,
                 message="the first ERP poll reached the projection")
        # Given an order with a back-ordered SOCK line
        order = back_order_one_sock(demo, book)
        # When SOCKs arrive and the worker is killed right after the ERP reserved the line
        armed = kill_after(erp, "reserve", bus)
        armed[0] = True
        erp.post_movement("GR-SOCK-9", ("SCK-WHT-01", "2001", "0100"), "101", Decimal(2))
        wait_for(bus.dead, timeout=60, message="the worker is killed after the reservation")
        bus.start()
        # Then the order still ends fulfilled, with one reservation document for the line
        wait_for(lambda: (r := book.get(order)) is not None and r.outcome == "fulfilled",
                 timeout=90, message="the back order reserved after the restart")
        assert erp.document_count("reservation") == 3  # first order, TEE, the back order
        held = {document_reference(a.key, "IR", 26) for r in book.list()
                for ln in r.saga.lines for a in ln.allocations if a.state == "reserved"}
        assert set(erp.open_reservations()) == held and len(held) == 3
        wait_for(lambda: len(notices(demo)) == 2, timeout=60, message="two notices")
        assert [n["outcome"] for n in notices(demo)] == ["partly_back_ordered", "fulfilled"]
    finally:
        bus.stop()
        if store is not None:
            store.close()
        demo.shop.stop()  # with the shop's webhook sender
        demo.erp.stop()
