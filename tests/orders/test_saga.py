"""The order process manager on the real store (SQLite) with the fake ERP's state in-process:
each final state of the sourcing policy, a person's decision, resuming after a crash at each
step, and a property test over random interleavings of orders, stock changes and faults."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.soap_erp.fakeerp.state import ErpState
from integration_bus.connector import ConnectorContext
from integration_bus.envelope import Envelope
from integration_bus.errors import TransientError
from integration_bus.retail.orders.book import SagaBook
from integration_bus.retail.orders.manager import OrderNeedsDecision, OrderProcessManager
from integration_bus.retail.orders.policy import SourcingPolicy
from integration_bus.retail.orders.rechecks import (
    RESTAGE_INTERVALS,
    OrderRecheckConfig,
    OrderRecheckSource,
)
from integration_bus.store import Store
from tests.orders.systems import PLANTS, Crash, ErpSystems

SKUS = ("TEE", "MUG", "SCK")


def policy(**changes: Any) -> SourcingPolicy:
    base: dict[str, Any] = {
        "channels": {"web": ["WH-01", "STORE-042", "STORE-107"]}, "default_channel": "web",
        "stores": ["STORE-042", "STORE-107"], "max_split": 2,
        "back_order": {"skus": ["SCK"]}, "otherwise": "cancel", "wait": "60s"}
    return SourcingPolicy.model_validate({**base, **changes})


class World:
    """One store, one ERP, one manager; ``atp`` is what the projection would say (it lags:
    ``poll()`` copies the ERP's availability into it)."""

    def __init__(self, store: Store, pol: SourcingPolicy, clock: list[float],
                 prefix: str = "o") -> None:
        self.prefix = prefix
        self.erp = ErpState()
        self.systems = ErpSystems(self.erp)
        self.projection: dict[tuple[str, str], Decimal] = {}
        self.book = SagaBook(store)
        self.policy = pol
        self.clock = clock
        self.manager = OrderProcessManager(self.book, pol, self.systems, self.atp,
                                           clock=lambda: clock[0])
        self.numbers = itertools.count(1)

    def seed(self, sku: str, location: str, units: int) -> None:
        self.erp.seed(sku, *PLANTS[location], units)

    def poll(self) -> None:
        with self.erp.lock:
            for (sku, plant, storage), row in self.erp.stock.items():
                location = next(k for k, v in PLANTS.items() if v == (plant, storage))
                self.projection[(sku, location)] = row.available

    def atp(self, sku: str, location: str) -> Decimal | None:
        return self.projection.get((sku, location))

    def order(self, *lines: tuple[str, int], paid: bool = True) -> Envelope:
        number = next(self.numbers)
        return Envelope.create("order.accepted", {
            "order_id": f"{self.prefix}{number}", "channel": "web",
            "status": "paid" if paid else "pending",
            "lines": [{"line_no": i + 1, "sku": sku, "quantity": qty,
                       "charged": f"{qty * 10}.00"}
                      for i, (sku, qty) in enumerate(lines)]},
            source="test", idempotency_key=f"{self.prefix}order-{number}")

    def run(self, envelope: Envelope) -> str:
        """Handle until it settles (resuming after crashes); the saga's state afterwards."""
        for _ in range(10):
            try:
                return self.manager.handle(envelope).outcome or "?"
            except Crash:
                continue
            except OrderNeedsDecision:
                return "waiting"
            except TransientError:
                return "retrying"
        raise AssertionError("did not settle")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'bus.db'}")
    yield s
    s.close()


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path_factory.mktemp('sagas') / 'bus.db'}")
    yield s
    s.close()


_EXAMPLES = itertools.count(1)


@pytest.fixture
def clock() -> list[float]:
    return [1_000_000.0]


def test_an_order_that_fits_is_fulfilled_as_ordered(store: Store, clock: list[float]) -> None:
    world = World(store, policy(), clock)
    world.seed("TEE", "WH-01", 5)
    world.poll()
    assert world.run(world.order(("TEE", 2))) == "fulfilled"
    assert world.erp.document_count("sales_order") == 1
    assert world.erp.document_count("reservation") == 1
    assert not world.systems.notices and not world.systems.shop  # nothing to tell


def test_the_race_re_sources_the_short_line_from_the_next_location(
        store: Store, clock: list[float]) -> None:
    # Given 3 at WH-01, 2 at STORE-042, and a projection that does not move between orders
    world = World(store, policy(), clock)
    world.seed("TEE", "WH-01", 3)
    world.seed("TEE", "STORE-042", 2)
    world.poll()
    # When two orders of 2 each arrive before the next poll
    first, second = world.order(("TEE", 2)), world.order(("TEE", 2))
    assert world.run(first) == "fulfilled"
    # Then the second is refused by the ERP at WH-01 and reserved at STORE-042
    assert world.run(second) == "re_sourced"
    saga = world.book.get("o2")
    assert saga is not None
    (line,) = saga.saga.lines
    assert [(a.location, a.quantity) for a in line.allocations] == [("STORE-042", "2")]
    assert line.tried == ["WH-01"]
    timeline = [(e.step, e.decision) for e in world.book.timeline("o2")]
    assert ("reserve", "short") in timeline and ("reserve", "reserved") in timeline
    assert len(world.systems.notices) == 1  # the customer is told once
    assert world.systems.shop["o2"] == {"TEE": "sourced"}


def test_no_location_has_it_back_order_or_cancel_per_sku(store: Store,
                                                          clock: list[float]) -> None:
    world = World(store, policy(), clock)
    world.seed("SCK", "WH-01", 1)
    world.seed("MUG", "WH-01", 1)
    world.seed("TEE", "WH-01", 5)
    world.poll()
    assert world.run(world.order(("SCK", 1), ("MUG", 1))) == "fulfilled"
    # SCK may be back-ordered, MUG may not: its line is cancelled on the sales order (the
    # order stays partly back-ordered while a line waits for stock)
    assert world.run(world.order(("SCK", 1), ("MUG", 1), ("TEE", 1))) == "partly_back_ordered"
    saga = world.book.get("o2")
    assert saga is not None
    assert [ln.status for ln in saga.saga.lines] == ["back_ordered", "cancelled", "sourced"]
    assert world.erp.open_lines("oorder-2>sales_order").keys() == {1, 3}
    # A whole order that cannot ship is cancelled, and what it had reserved is released
    world2 = World(store, policy(partial="cancel_order"), clock)
    world2.numbers = itertools.count(10)
    world2.seed("TEE", "WH-01", 5)
    world2.seed("MUG", "WH-01", 0)
    world2.poll()
    assert world2.run(world2.order(("TEE", 2), ("MUG", 1))) == "cancelled"
    assert world2.erp.open_reservations() == {}
    assert world2.erp.open_lines("oorder-10>sales_order") == {}


def test_ask_waits_for_a_person_and_their_choice_continues_the_saga(
        store: Store, clock: list[float]) -> None:
    world = World(store, policy(otherwise="ask"), clock)
    world.seed("MUG", "WH-01", 0)
    world.poll()
    order = world.order(("MUG", 1))
    with pytest.raises(OrderNeedsDecision) as caught:
        world.manager.handle(order)
    assert caught.value.context["options"] == ["back_order", "cancel_line", "cancel_order"]
    record = world.book.get("o1")
    assert record is not None and record.state == "waiting" and record.reason
    with pytest.raises(ValueError, match="not one of"):
        world.manager.decide("o1", "ship_anyway")
    world.manager.decide("o1", "back_order")
    assert world.run(order) == "partly_back_ordered"


def test_a_silent_erp_past_the_wait_goes_to_a_person(store: Store,
                                                     clock: list[float]) -> None:
    world = World(store, policy(on_timeout="ask"), clock)
    world.seed("TEE", "WH-01", 5)
    world.poll()
    world.systems.silent.add("WH-01")
    order = world.order(("TEE", 1))
    assert world.run(order) == "retrying"  # within the wait: the route retries
    clock[0] += 61
    assert world.run(order) == "waiting"
    record = world.book.get("o1")
    assert record is not None and "did not answer within 60 s" in (record.reason or "")
    # the ERP had reserved it after all: a person's back order first releases that
    assert len(world.erp.open_reservations()) == 1
    world.manager.decide("o1", "back_order")
    assert world.run(order) == "partly_back_ordered"
    assert world.erp.open_reservations() == {}
    record = world.book.get("o1")
    assert record is not None
    assert [a.state for a in record.saga.lines[0].allocations] == ["released"]


@pytest.mark.parametrize("crash_at", [
    ("sales_order", "after"), ("reserve", "before"), ("reserve", "after"),
    ("release", "after"), ("cancel_lines", "after"), ("shop_cancel", "before"),
    ("shop_cancel", "after"), ("tell_shop", "after"), ("notify", "after")])
def test_a_crash_at_any_step_resumes_to_the_same_end(store: Store, clock: list[float],
                                                     crash_at: tuple[str, str]) -> None:
    # Given an order whose first line fits, second is short with no back order, and a policy
    # that then cancels the order (so every kind of step, reverses included, happens)
    world = World(store, policy(partial="cancel_order"), clock)
    world.seed("TEE", "WH-01", 5)
    world.seed("MUG", "WH-01", 0)
    world.poll()
    world.systems.crash_at = crash_at
    assert world.run(world.order(("TEE", 2), ("MUG", 1))) == "cancelled"
    assert world.systems.crash_at is None  # it did crash there
    # Then one document per reference, nothing held, the sales order all cancelled, told once
    assert world.erp.document_count("sales_order") == 1
    assert world.erp.document_count("reservation") == 1
    assert world.erp.open_reservations() == {}
    assert world.erp.open_lines("oorder-1>sales_order") == {}
    assert len(world.systems.notices) == 1
    # the shop cancelled both lines and refunded what was paid for them, once
    assert world.systems.refunds == {"o1": {1: "20.00", 2: "10.00"}}
    assert [c for c in world.systems.calls if c[0] == "shop_cancel"] == \
        [("shop_cancel", "oorder-1>shop_cancel:1,2")] * (2 if crash_at[0] == "shop_cancel"
                                                         and crash_at[1] == "after" else 1)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_never_more_promised_than_the_erp_had(shared_store: Store,
                                              data: st.DataObject) -> None:
    prefix = f"x{next(_EXAMPLES)}-"  # one store for all examples: each has its own orders
    pol = policy(back_order={"skus": ["SCK"], "wait": "30m"},
                 otherwise=data.draw(st.sampled_from(["cancel", "ask"])),
                 partial=data.draw(st.sampled_from(["keep", "cancel_order"])),
                 max_split=data.draw(st.integers(1, 3)),
                 ship_from_store=data.draw(st.booleans()))
    world = World(shared_store, pol, [1_000_000.0], prefix)
    had: dict[tuple[str, str], int] = {}
    for sku in SKUS:
        for location in PLANTS:
            units = data.draw(st.integers(0, 3))
            world.seed(sku, location, units)
            had[(sku, location)] = units
    world.poll()
    orders = []
    actions = data.draw(st.lists(st.sampled_from(["order", "poll", "receipt", "crash",
                                                  "recheck", "later"]),
                                 min_size=1, max_size=12))
    for action in actions:
        if action == "poll":
            world.poll()
        elif action == "receipt":  # stock arrives (a POS return, a delivery)
            sku, location = data.draw(st.sampled_from(sorted(had)))
            world.erp.post_movement(f"rcpt-{len(world.erp.changes)}",
                                    (sku, *PLANTS[location]), "101", Decimal(1))
            had[(sku, location)] += 1
        elif action == "later":  # past some back orders' wait
            world.clock[0] += data.draw(st.sampled_from([60.0, 3600.0]))
        elif action == "recheck":  # back orders looked at again (stock arrived or waited)
            for order in orders:
                for _ in range(10):  # a crash: the recheck is delivered again
                    try:
                        world.manager.recheck(order.payload["order_id"], Envelope.create(
                            "order.recheck", {"order_id": order.payload["order_id"]},
                            source="test"))
                    except Crash:
                        continue
                    except (OrderNeedsDecision, TransientError):
                        pass
                    break
        elif action == "crash":
            world.systems.crash_at = (data.draw(st.sampled_from(
                ["sales_order", "reserve", "release", "cancel_lines", "notify"])),
                data.draw(st.sampled_from(["before", "after"])))
        else:
            skus = data.draw(st.lists(st.sampled_from(SKUS), min_size=1, max_size=3,
                                      unique=True))
            order = world.order(*[(s, data.draw(st.integers(1, 3))) for s in skus])
            orders.append(order)
            world.run(order)
    # Never more reserved at a location than it had (plus what arrived)
    promised: dict[tuple[str, str], Decimal] = {}
    mine = [r for r in world.book.list(limit=100_000) if r.saga.order_id.startswith(prefix)]
    for record in mine:
        for line in record.saga.lines:
            for alloc in line.allocations:
                if alloc.state == "reserved":
                    pair = (line.sku, alloc.location)
                    promised[pair] = promised.get(pair, Decimal(0)) + alloc.units
    for pair, units in promised.items():
        assert units <= had[pair], (pair, units, had[pair])
    # The saga and the ERP agree: every open reservation is one a saga holds
    held = {alloc.key for record in mine
            for line in record.saga.lines for alloc in line.allocations
            if alloc.state == "reserved"}
    assert set(world.erp.open_reservations()) == held
    # Every order final, or waiting for a person with a reason
    for order in orders:
        record = world.book.get(order.payload["order_id"])
        assert record is not None
        assert record.state in ("final", "waiting"), record
        if record.state == "waiting":
            assert record.reason and record.saga.asking
        else:
            assert record.outcome in ("fulfilled", "re_sourced", "partly_back_ordered",
                                      "partly_cancelled", "cancelled")


def test_a_saga_round_trips_through_its_json_with_every_field() -> None:
    from dataclasses import fields

    from integration_bus.retail.orders.saga import Allocation, Line, Saga

    saga = Saga("o1", "web", 1.5, [Line(1, "TEE", "2", "k", "back_ordered",
                                        [Allocation("WH-01", "1", "k")], ["STORE-042"], "why",
                                        "19.99")],
                phase="waiting", outcome=None, asking={"line_no": 1, "options": ["x"]},
                sales_order=True, cancelled_lines=[2], shop_told=True, notified=True,
                paid=True, currency="EUR", shop_cancelled=[2], round=1, told="re_sourced",
                refs={"order": "k"}, customer={"name": "A"})
    data = saga.to_json()
    assert set(data) == {f.name for f in fields(Saga)}
    assert set(data["lines"][0]) == {f.name for f in fields(Line)}
    assert Saga.from_json(data) == saga


def test_a_final_saga_reports_its_age(store: Store, clock: list[float]) -> None:
    world = World(store, policy(), clock)
    ages: list[float] = []
    world.manager.on_final = lambda record: ages.append(record.age_seconds())
    world.seed("TEE", "WH-01", 5)
    world.poll()
    assert world.run(world.order(("TEE", 1))) == "fulfilled"
    assert len(ages) == 1 and ages[0] >= 0


def test_without_a_shop_sink_telling_the_shop_is_skipped_and_recorded(
        store: Store, clock: list[float]) -> None:
    world = World(store, policy(), clock)
    world.systems.shop_sink = False
    world.seed("MUG", "WH-01", 0)
    world.poll()
    assert world.run(world.order(("MUG", 1))) == "cancelled"
    assert not world.systems.shop and len(world.systems.notices) == 1
    assert ("tell_shop", "skipped") in [(e.step, e.decision) for e in world.book.timeline("o1")]


def test_a_cancelled_line_is_cancelled_at_the_shop_refunded_only_when_paid(
        store: Store, clock: list[float]) -> None:
    world = World(store, policy(), clock)
    world.seed("TEE", "WH-01", 5)
    world.seed("MUG", "WH-01", 0)
    world.poll()
    assert world.run(world.order(("TEE", 1), ("MUG", 2))) == "partly_cancelled"
    assert world.run(world.order(("MUG", 1), paid=False)) == "cancelled"
    assert world.systems.refunds == {"o1": {2: "20.00"}, "o2": {1: "0.00"}}
    steps = [(e.step, e.decision) for e in world.book.timeline("o1")]
    assert steps.index(("cancel_lines", "done")) < steps.index(("shop_cancel", "done")) \
        < steps.index(("tell_shop", "done"))


def recheck(world: World, order_id: str) -> str:
    record = world.manager.recheck(order_id, Envelope.create(
        "order.recheck", {"order_id": order_id}, source="test"))
    assert record is not None
    return record.outcome or record.state


def test_a_back_order_is_reserved_when_stock_arrives(store: Store, clock: list[float]) -> None:
    # Given a line back-ordered: no location has SCK
    world = World(store, policy(), clock)
    world.seed("SCK", "WH-01", 0)
    world.seed("TEE", "WH-01", 5)
    world.poll()
    assert world.run(world.order(("SCK", 2), ("TEE", 1))) == "partly_back_ordered"
    assert len(world.systems.notices) == 1
    # A recheck before stock arrives changes nothing
    assert recheck(world, "o1") == "partly_back_ordered"
    assert world.book.get("o1").saga.round == 0  # type: ignore[union-attr]
    # When SCK arrives at STORE-042 (the projection sees it) and the order is rechecked
    world.erp.post_movement("rcpt-1", ("SCK", *PLANTS["STORE-042"]), "101", Decimal(5))
    world.poll()
    assert recheck(world, "o1") == "re_sourced"
    # Then the back-ordered line is reserved in policy order (WH-01 refused, STORE-042 had it)
    record = world.book.get("o1")
    assert record is not None and record.state == "final" and record.saga.round == 1
    (sck, _) = record.saga.lines
    assert sck.status == "sourced"
    assert [(a.location, a.quantity, a.state) for a in sck.allocations] == \
        [("STORE-042", "2", "reserved")]
    assert world.erp.open_reservations().keys() == {
        a.key for ln in record.saga.lines for a in ln.allocations if a.state == "reserved"}
    # the shop and the customer told of the change (a second notice: the outcome changed)
    assert len(world.systems.notices) == 2
    assert world.systems.shop["o1"] == {"SCK": "sourced", "TEE": "sourced"}
    # and a further recheck does nothing
    assert recheck(world, "o1") == "re_sourced"
    assert len(world.systems.notices) == 2


def test_a_back_order_past_its_wait_is_cancelled_with_its_compensation(
        store: Store, clock: list[float]) -> None:
    world = World(store, policy(back_order={"skus": ["SCK"], "wait": "1h"}), clock)
    world.seed("SCK", "WH-01", 0)
    world.seed("SCK", "STORE-042", 1)
    world.seed("TEE", "WH-01", 5)
    world.poll()
    # Given a line partly reserved at STORE-042 (1 of 3) and back-ordered for the rest
    assert world.run(world.order(("SCK", 3), ("TEE", 1))) == "partly_back_ordered"
    assert len(world.erp.open_reservations()) == 2
    # When the hour passes without stock and the order is rechecked
    clock[0] += 3601
    assert recheck(world, "o1") == "partly_cancelled"
    # Then the line is cancelled: its reservation released, its sales order line cancelled,
    # cancelled and refunded at the shop, and the customer told
    record = world.book.get("o1")
    assert record is not None
    assert [ln.status for ln in record.saga.lines] == ["cancelled", "sourced"]
    assert len(world.erp.open_reservations()) == 1
    assert world.erp.open_lines("oorder-1>sales_order").keys() == {2}
    assert world.systems.refunds == {"o1": {1: "30.00"}}
    assert len(world.systems.notices) == 2
    assert ("recheck", "round 1") in [(e.step, e.decision) for e in world.book.timeline("o1")]


@pytest.mark.parametrize("crash_at", [("reserve", "after"), ("tell_shop", "after"),
                                      ("notify", "before")])
def test_a_crash_during_a_recheck_resumes_to_the_same_end(store: Store, clock: list[float],
                                                          crash_at: tuple[str, str]) -> None:
    world = World(store, policy(), clock)
    world.seed("SCK", "WH-01", 0)
    world.poll()
    assert world.run(world.order(("SCK", 1))) == "partly_back_ordered"
    world.erp.post_movement("rcpt-1", ("SCK", *PLANTS["WH-01"]), "101", Decimal(1))
    world.poll()
    world.systems.crash_at = crash_at
    with pytest.raises(Crash):
        recheck(world, "o1")
    assert recheck(world, "o1") == "fulfilled"  # the redelivered recheck goes on
    assert world.erp.document_count("reservation") == 1
    assert len(world.erp.open_reservations()) == 1
    assert len(world.systems.notices) == 2


def test_a_batch_of_sagas_is_started_and_saved_in_one_go_and_a_moved_one_conflicts(
        store: Store) -> None:
    from integration_bus.retail.orders.book import Entry, SagaConflict
    from integration_bus.retail.orders.saga import Line, Saga
    from integration_bus.store.ledger import Claim, ClaimOutcome

    book = SagaBook(store)

    def saga(order_id: str) -> Saga:
        return Saga(order_id, "web", 1.0, [Line(1, "TEE", "1", f"{order_id}#1")],
                    refs={"order": order_id})

    book.start(saga("b0"))  # an order stored before this batch
    # When a batch starts b1, b2, a second copy of b1 and the stored b0
    started = book.start_many([
        (saga("b1"), [Claim("erp", "b1#1", "saga:b1", "e1", redelivered=True)]),
        (saga("b2"), [Claim("erp", "b2#1", "saga:b2", "e2", redelivered=True)]),
        (saga("b1"), [Claim("erp", "b1#1", "saga:b1", "e3", redelivered=True)]),
        (saga("b0"), [Claim("erp", "b0#1", "saga:b0", "e4", redelivered=True)])])
    # Then the new ones are created with their claims; a copy and a stored one claim nothing
    assert [outcomes for _, outcomes in started] == [[ClaimOutcome.CLAIMED],
                                                    [ClaimOutcome.CLAIMED], None, None]
    assert [r.version for r, _ in started] == [1, 1, 1, 1]
    assert [e.step for e in book.timeline("b1")] == ["start"]
    # When b2 moves on elsewhere, and the batch saves b1 and b2 from version 1
    book.save(started[1][0], saga("b2"), step="x", decision="y", reason="elsewhere")
    saved = book.save_many([
        (record, record.saga, [Entry("finish", "fulfilled", "done")],
         [("erp", f"{record.saga.order_id}#1", f"saga:{record.saga.order_id}")], [])
        for record, _ in started[:2]])
    # Then b1 is saved, b2 is a conflict (and its claim not settled)
    assert not isinstance(saved[0], SagaConflict) and saved[0].version == 2
    assert isinstance(saved[1], SagaConflict)
    assert book.get("b1").version == 2  # type: ignore[union-attr]
    assert book.get("b2").version == 2  # type: ignore[union-attr]
    assert [e.step for e in book.timeline("b2")] == ["start", "x"]
    # and a batch with no conflict is saved whole
    again = book.save_many([(book.get(o), book.get(o).saga,  # type: ignore[arg-type,union-attr]
                             [Entry("note", "n", f"again {o}")], [], []) for o in ("b1", "b2")])
    assert [r.version for r in again] == [3, 3]  # type: ignore[union-attr]


class _SagaSink:
    """What the recheck source reads of its order_saga sink: the sourcing policy."""

    def __init__(self, pol: SourcingPolicy) -> None:
        self.policy = pol

    def close(self) -> None:
        pass


class _WorldStock:
    """The projection as the recheck source reads it: the World's (it lags the ERP)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def available_to_promise(self, pairs: Any) -> dict[tuple[str, str], Decimal | None]:
        return {pair: self.world.projection.get(pair) for pair in pairs}


def test_a_recheck_that_found_the_stock_gone_is_sent_again_and_the_deadline_still_comes(
        store: Store, clock: list[float]) -> None:
    # Given a back-ordered SCK line, and the recheck source polling every second
    world = World(store, policy(back_order={"skus": ["SCK"], "wait": "1h"}), clock)
    world.seed("SCK", "WH-01", 0)
    world.seed("TEE", "WH-01", 5)
    world.poll()
    assert world.run(world.order(("SCK", 2), ("TEE", 1))) == "partly_back_ordered"
    staged: list[Envelope] = []
    context = ConnectorContext(
        instance="order_rechecks", root=Path("."), cursors=None, seen=None,  # type: ignore[arg-type]
        stock=_WorldStock(world), open_publisher=None, log=structlog.get_logger(),  # type: ignore[arg-type]
        reject=None, record=None, metrics=None,  # type: ignore[arg-type]
        stage=lambda envelopes, cursor: staged.extend(envelopes),
        compile_mapping=None,  # type: ignore[arg-type]  (the source loads no mapping)
        clock=lambda: clock[0], sagas=world.book, sinks=lambda name: _SagaSink(world.policy))
    source = OrderRecheckSource(OrderRecheckConfig(sink="orders", interval="1s"), context)
    # When the projection shows SCK for a moment (the source nudges the order), but it is gone
    # when the nudge is handled (the ERP's next poll): that recheck changes nothing
    world.projection[("SCK", "STORE-042")] = Decimal(3)
    assert source.poll() == 1
    world.poll()
    assert recheck(world, "o1") == "partly_back_ordered"
    assert source.poll() == 0  # not again at once ...
    # Then the order is nudged again later while it still looks due, with a key of its own
    clock[0] += RESTAGE_INTERVALS * 1.0
    world.projection[("SCK", "STORE-042")] = Decimal(3)
    assert source.poll() == 1
    assert len({e.idempotency_key for e in staged}) == 2
    # ... and once the back order waited an hour the nudge cancels it
    world.poll()
    clock[0] += 3601
    assert source.poll() == 1
    assert recheck(world, "o1") == "partly_cancelled"
    assert source.poll() == 0  # nothing back-ordered any more
