"""Stock projection and availability: out-of-order, duplicated, replayed events never roll back."""

from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path

import pytest

from integration_bus.envelope import Envelope
from integration_bus.retail.projection import StockLevel
from integration_bus.runtime import Bus
from integration_bus.web.app import availability_service
from tests.conftest import write_config
from tests.support.probe import running, wait_for
from tests.support.services import free_port

CONFIG = """
store: {{url: "{store}"}}
availability:
  safety_stock: 1
  per_location: {{STORE-042: 2}}
  http_port: {port}
  max_staleness: 200ms
sinks:
  stock: {{connector: projection}}
routes:
  stock_levels: {{from: [stock.level], to: [stock]}}
"""


def events(seed: int) -> tuple[list[Envelope], dict[tuple[str, str], tuple[int, str]]]:
    """10,000 set-events for 100 sku x location pairs; each pair's source has its own clock
    (versions start anywhere, step unevenly). Returns the shuffled events (10% duplicated) and
    the oracle: per pair, the level with the highest version."""
    rng = random.Random(seed)
    pairs = [(f"SKU-{s:02d}", f"STORE-{n:03d}") for s in range(25) for n in (42, 43, 44, 45)]
    out, oracle = [], {}
    for sku, location in pairs:
        version = rng.randrange(0, 10**9)  # skewed source clocks: unrelated starting points
        for _ in range(100):
            version += rng.randrange(1, 1000)
            on_hand = str(rng.randrange(0, 500))
            out.append(Envelope.create("stock.level", {
                "sku": sku, "location": location, "on_hand": on_hand,
                "reserved": str(rng.randrange(0, 5)), "version": version}, source="erp"))
            oracle[(sku, location)] = (version, on_hand)
    out += rng.sample(out, len(out) // 10)  # 10% delivered twice
    rng.shuffle(out)
    return out, oracle


@pytest.mark.parametrize(("seed", "database"), [(1, "sqlite"), (2, "sqlite"), (3, "postgres")])
def test_projection_equals_max_version_oracle_whatever_the_order(
        tmp_path: Path, seed: int, database: str, request: pytest.FixtureRequest) -> None:
    store = ("sqlite:///var/bus.db" if database == "sqlite"
             else request.getfixturevalue("postgres_url"))
    config_dir = write_config(tmp_path, CONFIG.format(store=store, port=free_port()))
    shuffled, oracle = events(seed)
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        publisher = bus.publisher()
        assert publisher.publish_many(shuffled) == [None] * len(shuffled)
        distinct = len({e.id for e in shuffled})
        with running(bus.worker().run):
            # every event delivered once (repeats of a key retried or recorded as duplicates)
            wait_for(lambda: bus.store.route_summary().get("stock_levels", {})
                     .get("delivered") == distinct, timeout=120, message="all events applied")
        assert bus.store.dead_letters() == []
        # and a replay of an old event afterwards changes nothing
        stale = min(shuffled, key=lambda e: e.payload["version"])
        assert bus.stock.apply([StockLevel.from_envelope(stale)]) == [False]
        projected = {(s.sku, s.location): (s.version, str(s.on_hand)) for s in bus.stock.all()}
    assert projected == oracle


def test_availability_endpoint_states_its_staleness(tmp_path: Path) -> None:
    port = free_port()
    config_dir = write_config(tmp_path, CONFIG.format(store="sqlite:///var/bus.db", port=port))
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        level = Envelope.create("stock.level", {"sku": "A-1", "location": "STORE-042",
                                                "on_hand": "10", "reserved": "3",
                                                "in_transit": "5", "version": 7}, source="erp")
        publisher = bus.publisher()
        publisher.publish(level)

        def get(sku: str) -> tuple[int, dict[str, object]]:
            url = f"http://127.0.0.1:{port}/availability?sku={sku}&location=STORE-042"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())
            except OSError:
                return 0, {}

        with running(lambda stop: bus.run(stop, sources=[], services=availability_service(bus))):
            wait_for(lambda: get("A-1")[0] == 200, message="served")
            _, body = get("A-1")
            # 10 on hand - 3 reserved - 2 safety stock at STORE-042; in transit not counted
            assert body["available"] == "5" and body["max_staleness_ms"] == 200
            assert "as_of" in body
            publisher.publish(Envelope.create("stock.level", {
                "sku": "A-1", "location": "STORE-042", "on_hand": "1", "version": 8},
                source="erp"))
            wait_for(lambda: get("A-1")[1].get("available") == "0", timeout=10,
                     message="new level visible within the staleness bound")
            assert get("A-1")[1]["short"] == "1"  # 1 - 0 - 2: one short of the safety stock
            assert get("NOPE")[0] == 404
            # no API schema or docs unless availability.http.docs; health says only "ok"
            for path in ("/openapi.json", "/docs"):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2)
                    raise AssertionError(f"{path} is served")
                except urllib.error.HTTPError as exc:
                    assert exc.code == 404, path
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                assert json.loads(answer.read()) == {"status": "ok"}
        publisher.close()


def test_bad_stock_level_is_a_dead_letter_naming_the_field(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, CONFIG.format(store="sqlite:///var/bus.db",
                                                      port=free_port()))
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        publisher = bus.publisher()
        publisher.publish(Envelope.create("stock.level", {"sku": "A-1", "location": "S",
                                                          "on_hand": 1.5, "version": 1},
                                          source="erp"))
        publisher.close()
        with running(bus.worker().run):
            wait_for(lambda: len(bus.store.dead_letters()) == 1)
        (letter,) = bus.store.dead_letters()
        assert "on_hand must be a decimal string or an integer" in letter["message"]
        assert bus.stock.get("A-1", "S") is None


GATE = """
store: {{url: "sqlite:///var/bus.db"}}
availability:
  per_location: {{WH-01: 2}}
sinks:
  gate: {{connector: availability, location: WH-01, type: order.accepted, unknown: {unknown}}}
  accepted: {{connector: jsonl, path: var/accepted.jsonl}}
routes:
  accepted: {{from: [order.accepted], to: [accepted]}}
"""


def order(*lines: tuple[str, object]) -> Envelope:
    return Envelope.create("order.created", {"order_id": "web-1", "lines": [
        {"line_no": i + 1, "sku": sku, "quantity": qty} for i, (sku, qty) in enumerate(lines)]},
        source="shop")


@pytest.mark.parametrize("unknown", ["short", "pass"])
def test_the_gate_passes_what_can_be_promised_and_names_every_short_line(
        tmp_path: Path, unknown: str) -> None:
    from connectors.availability import StockShort
    from integration_bus.errors import PermanentError

    config_dir = write_config(tmp_path, GATE.format(unknown=unknown))
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        bus.stock.apply([StockLevel.from_envelope(Envelope.create("stock.level", level,
                                                                  source="erp"))
                         for level in ({"sku": "TEE", "location": "WH-01", "on_hand": "10",
                                        "reserved": "3", "version": 5},
                                       {"sku": "MUG", "location": "WH-01", "on_hand": "4",
                                        "version": 2})])
        gate = bus.sink("gate")
        try:
            fits = order(("TEE", 3), ("TEE", 2), ("MUG", "2"))  # TEE: 5 of 10-3-2=5
            short = order(("TEE", 6), ("MUG", 1))
            unknown_sku = order(("HAT", 1))
            bad = [order(("TEE", 0)), order(("TEE", 1.5)),
                   Envelope.create("order.created", {"order_id": "x"}, source="shop")]
            outcomes = gate.deliver_many([fits, short, unknown_sku, *bad])  # type: ignore[attr-defined]
        finally:
            gate.close()
        assert outcomes[0] is None
        assert isinstance(outcomes[1], StockShort)
        # (checked against what the first order of the batch left: no TEE, no MUG)
        assert "'TEE' 6 ordered, 0 available to promise" in outcomes[1].message
        assert "'MUG' 1 ordered, 0 available to promise" in outcomes[1].message
        assert outcomes[1].context["order_id"] == "web-1"
        if unknown == "pass":
            assert outcomes[2] is None
        else:
            assert isinstance(outcomes[2], StockShort)
            assert "'HAT' 1 ordered, no stock level" in outcomes[2].message
        fields = [o.context.get("field") for o in outcomes[3:]]
        assert all(isinstance(o, PermanentError) and not isinstance(o, StockShort)
                   for o in outcomes[3:])
        assert fields == ["lines[0].quantity", "lines[0].quantity", "lines"]
        # What passed was published as order.accepted, derived from the order
        with running(bus.worker().run):
            accepted = tmp_path / "var" / "accepted.jsonl"
            wait_for(lambda: accepted.exists() and accepted.read_text().count("\n")
                     == 1 + (unknown == "pass"))
        first = json.loads(accepted.read_text().splitlines()[0])
        assert first["type"] == "order.accepted" and first["causation_id"] == fits.id


def test_orders_of_one_batch_never_promise_the_same_units_twice(tmp_path: Path) -> None:
    from connectors.availability import StockShort

    config_dir = write_config(tmp_path, GATE.format(unknown="short"))
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        bus.stock.apply([StockLevel.from_envelope(Envelope.create("stock.level", {
            "sku": "TEE", "location": "WH-01", "on_hand": "7", "version": 1}, source="erp"))])
        gate = bus.sink("gate")  # available to promise: 7 - 2 safety = 5
        try:
            first, second, third = order(("TEE", 3)), order(("TEE", 3)), order(("TEE", 2))
            outcomes = gate.deliver_many([first, second, third])  # type: ignore[attr-defined]
            # The first takes 3 of 5; the second would need 3 of the 2 left; the third fits
            assert outcomes[0] is None and outcomes[2] is None
            assert isinstance(outcomes[1], StockShort)
            assert "'TEE' 3 ordered, 2 available to promise" in outcomes[1].message
            # A retry of an accepted order (its confirm was lost, say) is accepted again, even
            # though stock has moved since: the decision was recorded before publishing
            bus.stock.apply([StockLevel.from_envelope(Envelope.create("stock.level", {
                "sku": "TEE", "location": "WH-01", "on_hand": "7", "reserved": "5",
                "version": 2}, source="erp"))])
            assert gate.deliver_many([first.next_attempt()]) == [None]  # type: ignore[attr-defined]
            assert isinstance(gate.deliver_many([order(("TEE", 1))])[0],  # type: ignore[attr-defined]
                              StockShort)
        finally:
            gate.close()
