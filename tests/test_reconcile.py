"""``bus reconcile`` against the real fake ERP (SOAP) and fake shop (REST) on loopback, and a
real store: agreeing systems, injected differences, JSON, the metrics file, typed errors."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict

from connectors.projection import plugin as projection_plugin
from connectors.rest_shop import make_plugin as make_shop_plugin
from connectors.rest_shop.fakeshop import AppServer, ShopState, build_shop_app
from connectors.soap_erp import make_plugin as make_erp_plugin
from connectors.soap_erp.fakeerp import WSDL_DIR, ErpServer, ErpState
from integration_bus.cli import cli
from integration_bus.connector import ConnectorContext, ConnectorPlugin, Envelope, StockReading
from integration_bus.reconcile import compare, reconcile_bus
from integration_bus.registry import Registry
from integration_bus.retail.projection import Stock, StockLevel
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from tests.support.services import free_port

TOKEN = "shpat-reconcile"
WH, STORE = ("WH-01", ("2001", "0100")), ("STORE-042", ("1042", "0001"))
LOCATIONS = """code,store_id,erp_plant,storage_location,timezone
0042,STORE-042,1042,0001,Europe/Berlin
STORE-042,STORE-042,1042,0001,Europe/Berlin
WH-01,WH-01,2001,0100,Europe/Berlin
"""
SHOP_SKUS = """sku,shop_sku
TEE-BLK-M,TSHIRT-BLK-M
MUG-WHT-01,MUG-WHITE
"""
#: the agreeing world: (sku, location) -> (on hand, reserved); the shop sells WH-01 only
STOCK = {("TEE-BLK-M", "WH-01"): (40, 5), ("TEE-BLK-M", "STORE-042"): (12, 0),
         ("MUG-WHT-01", "WH-01"): (8, 0), ("MUG-WHT-01", "STORE-042"): (3, 0),
         ("CAP-NVY-01", "WH-01"): (20, 0)}
SHOP = {"TSHIRT-BLK-M": 35, "MUG-WHITE": 8, "GIFT-CARD": 999}  # GIFT-CARD: not the bus's
PLACES = dict([WH, STORE])


@dataclass
class World:
    """The three systems of one test: the fake ERP, the fake shop, the bus project."""

    erp: ErpState
    shop: ShopState
    shop_url: str
    config_dir: Path

    def bus(self, registry: Registry | None = None) -> Bus:
        registry = registry or Registry([make_erp_plugin(), make_shop_plugin(),
                                         projection_plugin])
        return Bus(load_config(self.config_dir, registry, {}), registry=registry)

    def set_shop(self, shop_sku: str, available: int, version: int) -> None:
        """Set a level through the shop's API, as the shop sink does."""
        response = httpx.post(f"{self.shop_url}/admin/api/2024-01/inventory_levels/set.json",
                              json={"sku": shop_sku, "location_id": "WH-01",
                                    "available": available, "version": version},
                              headers={"X-Shopify-Access-Token": TOKEN})
        assert response.status_code == 200, response.text


def config_text(erp_url: str, shop_url: str, store: str, extra: str = "") -> str:
    return f"""
store: {{url: "{store}"}}
sources:
  erp_stock:
    connector: soap_erp
    wsdl: config/erp/erp.wsdl
    service: ErpService
    port: StockPort
    address: "{erp_url}"
    timeouts: {{connect: 1s, operation: 5s}}
  shop_orders:
    connector: rest_shop
    poll:
      shop: acme
      platform: shopify
      base_url: "{shop_url}"
      auth: {{kind: token, token: {TOKEN}, header: X-Shopify-Access-Token, scheme: null}}
      stock: {{skus: shop_sku}}
sinks:
  shop_stock:
    connector: rest_shop
    action: inventory
    shop: acme
    base_url: "{shop_url}"
    auth: {{kind: token, token: {TOKEN}, header: X-Shopify-Access-Token, scheme: null}}
    rate: 100
    stock: {{skus: shop_sku}}
  shop_raw:                          # no SKU table: the shop's own SKUs taken as the bus's
    connector: rest_shop
    action: inventory
    shop: acme
    base_url: "{shop_url}"
    auth: {{kind: token, token: {TOKEN}, header: X-Shopify-Access-Token, scheme: null}}
  erp_postings:
    connector: soap_erp
    wsdl: config/erp/erp.wsdl
    service: ErpService
    port: StockPort
    address: "{erp_url}"
    operation: PostStockAdjustment
    document_number: {{field: DocumentHeader.ExternalReference}}
    lookup: {{operation: FindDocument}}
  projection: {{connector: projection}}
routes:
  levels: {{from: [stock.level], to: [projection]}}
{extra}"""


def make_world(root: Path, store: str, extra: str = "") -> Iterator[World]:
    erp = ErpState()
    for (sku, location), (on_hand, reserved) in STOCK.items():
        plant, sloc = PLACES[location]
        erp.seed(sku, plant, sloc, on_hand)
        if reserved:
            erp.reserve(f"res-{sku}-{location}", (sku, plant, sloc), Decimal(reserved))
    erp.seed("NOT-SOLD-ANY-MORE", "2001", "0100", 0)  # the ERP's own history: never asked
    shop = ShopState(token=TOKEN)
    shutil.copytree(WSDL_DIR, root / "config" / "erp")
    (root / "mappings" / "xref").mkdir(parents=True)
    (root / "mappings" / "xref" / "location.csv").write_text(LOCATIONS)
    (root / "mappings" / "xref" / "shop_sku.csv").write_text(SHOP_SKUS)
    with ErpServer(erp) as erp_server, AppServer(build_shop_app(shop)) as shop_server:
        (root / "config" / "bus.yaml").write_text(
            config_text(erp_server.url, shop_server.url, store, extra))
        world = World(erp, shop, shop_server.url, root / "config")
        for version, (shop_sku, available) in enumerate(SHOP.items(), start=1):
            world.set_shop(shop_sku, available, version)
        with world.bus() as bus:
            bus.stock.apply([StockLevel(sku, location, Decimal(on_hand), version=1,
                                        reserved=Decimal(reserved))
                             for (sku, location), (on_hand, reserved) in STOCK.items()])
        yield world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path, "sqlite:///var/bus.db")


def reconcile(world: World, *args: str, erp: str = "erp_stock",
              shop: str = "shop_stock") -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["reconcile", "--config-dir", str(world.config_dir),
                                      "--erp", erp, "--shop", shop, *args])
    return result.exit_code, result.output


def report(world: World, *args: str) -> tuple[int, dict[str, Any]]:
    code, out = reconcile(world, "--json", *args)
    assert code in (0, 1), out
    return code, json.loads(out)


def test_agreeing_systems_report_no_mismatch(world: World) -> None:
    code, out = reconcile(world)
    assert code == 0, out
    # 5 pairs: CAP-NVY-01 at STORE-042 is known nowhere, GIFT-CARD is not the bus's SKU
    assert "all 5 pairs agree (mismatch ratio 0) at STORE-042, WH-01" in out
    code, data = report(world, "--location", "WH-01")
    assert code == 0
    assert (data["compared"], data["mismatched"], data["mismatch_ratio"]) == (3, 0, 0.0)
    assert data["locations"] == ["WH-01"] and data["mismatches"] == []
    # any soap_erp / rest_shop instance reads stock: a posting sink, an order poll
    code, out = reconcile(world, erp="erp_postings", shop="shop_orders")
    assert code == 0 and "all 5 pairs agree" in out, out


def test_injected_differences_are_reported_with_all_three_values(world: World) -> None:
    # Given three systems that agree, when each goes wrong in its own way:
    # the ERP issues 3 mugs at the store (the bus never hears of it) ...
    world.erp.post_movement("GI-1", ("MUG-WHT-01", "1042", "0001"), "201", Decimal(3))
    # ... the shop's mug level is set to something else ...
    world.set_shop("MUG-WHITE", 5, 10)
    # ... and the ERP reserves 5 more T-shirts, which reach the shop but not the projection
    world.erp.reserve("res-2", ("TEE-BLK-M", "2001", "0100"), Decimal(5))
    world.set_shop("TSHIRT-BLK-M", 30, 11)

    code, data = report(world)

    # then exactly those pairs are reported, each with what every system holds
    assert code == 1
    assert (data["compared"], data["mismatched"]) == (5, 3)
    assert data["mismatch_ratio"] == 0.6
    assert data["by_check"] == {"projection_on_hand": 1, "projection_available": 2,
                                "shop_available": 1}
    found = {(m["sku"], m["location"]): m for m in data["mismatches"]}
    assert found == {
        ("MUG-WHT-01", "STORE-042"): {
            "sku": "MUG-WHT-01", "location": "STORE-042",
            "failed": ["projection_on_hand", "projection_available"],
            "erp": {"on_hand": "0", "reserved": "0", "available": "0"},
            "projection": {"on_hand": "3", "reserved": "0", "available": "3", "version": 1},
            "shop": None},
        ("MUG-WHT-01", "WH-01"): {
            "sku": "MUG-WHT-01", "location": "WH-01", "failed": ["shop_available"],
            "erp": {"on_hand": "8", "reserved": "0", "available": "8"},
            "projection": {"on_hand": "8", "reserved": "0", "available": "8", "version": 1},
            "shop": {"available": "5", "version": 10}},
        ("TEE-BLK-M", "WH-01"): {
            "sku": "TEE-BLK-M", "location": "WH-01", "failed": ["projection_available"],
            "erp": {"on_hand": "40", "reserved": "10", "available": "30"},
            "projection": {"on_hand": "40", "reserved": "5", "available": "35", "version": 1},
            "shop": {"available": "30", "version": 11}},
    }
    # the table says the same
    code, out = reconcile(world)
    assert code == 1
    assert "3 of 5 pairs differ (mismatch ratio 0.6000;" in out
    for line in ("MUG-WHT-01 │ STORE-042", "MUG-WHT-01 │ WH-01", "TEE-BLK-M  │ WH-01"):
        assert line in out


def test_shop_skus_without_their_table_are_pointed_out(world: World) -> None:
    code, out = reconcile(world, "--location", "WH-01", shop="shop_raw")
    assert code == 1
    assert "3 pair(s) only the shop knows: if the shop names SKUs or locations its own way, " \
           "set stock.skus / stock.locations on 'shop_raw'" in out
    for shop_sku in ("TSHIRT-BLK-M", "MUG-WHITE", "GIFT-CARD"):
        assert re.search(rf"│ {shop_sku} +│ WH-01 +│ +- │ +- │", out)


def test_json_report_schema(world: World) -> None:
    world.set_shop("MUG-WHITE", 7, 10)
    code, data = report(world, "--sku", "NEW-SKU", "--location", "WH-01",
                        "--location", "STORE-042")
    assert code == 1
    assert set(data) == {"erp", "shop", "locations", "started_at", "seconds", "compared",
                         "mismatched", "mismatch_ratio", "by_check", "mismatches"}
    assert (data["erp"], data["shop"]) == ("erp_stock", "shop_stock")
    assert data["locations"] == ["WH-01", "STORE-042"]  # in the order asked
    assert isinstance(data["started_at"], str) and isinstance(data["seconds"], float)
    assert data["compared"] == 5  # NEW-SKU is known nowhere: asked, but not compared
    (mismatch,) = data["mismatches"]
    assert set(mismatch) == {"sku", "location", "failed", "erp", "projection", "shop"}
    assert set(mismatch["erp"]) == {"on_hand", "reserved", "available"}
    assert set(mismatch["projection"]) == {"on_hand", "reserved", "available", "version"}
    assert set(mismatch["shop"]) == {"available", "version"}
    assert all(isinstance(v, str) for v in mismatch["erp"].values())  # decimals as text


def metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(path.read_text())
            for s in family.samples}


def test_metrics_file_for_the_textfile_collector(world: World, tmp_path: Path) -> None:
    prom = tmp_path / "textfile" / "bus_reconcile.prom"
    prom.parent.mkdir()
    world.set_shop("MUG-WHITE", 7, 10)
    code, _ = reconcile(world, "--metrics-file", str(prom))
    assert code == 1
    who = (("erp", "erp_stock"), ("shop", "shop_stock"))
    values = metrics(prom)
    assert values[("bus_reconcile_mismatch_ratio", who)] == pytest.approx(0.2)
    assert values[("bus_reconcile_pairs_compared", who)] == 5
    assert values[("bus_reconcile_pairs_mismatched", who)] == 1
    assert values[("bus_reconcile_mismatches", (("check", "shop_available"), *who))] == 1
    assert values[("bus_reconcile_mismatches", (("check", "projection_on_hand"), *who))] == 0
    assert values[("bus_reconcile_last_success_timestamp_seconds", who)] > 1.7e9
    assert values[("bus_stock_mismatches", (("location", "WH-01"),))] == 1
    assert values[("bus_stock_mismatches", (("location", "STORE-042"),))] == 0
    assert "# TYPE bus_reconcile_mismatch_ratio gauge" in prom.read_text()
    assert [p.name for p in prom.parent.iterdir()] == ["bus_reconcile.prom"]  # no temp left

    # fixed: the next run replaces the file
    world.set_shop("MUG-WHITE", 8, 11)
    assert reconcile(world, "--metrics-file", str(prom))[0] == 0
    assert metrics(prom)[("bus_reconcile_mismatch_ratio", who)] == 0


def test_a_system_that_cannot_be_read_exits_3_and_keeps_the_metrics_file(
        world: World, tmp_path: Path) -> None:
    prom = tmp_path / "reconcile.prom"
    prom.write_text("# the last good run\n")
    path = world.config_dir / "bus.yaml"  # nothing listens there: connection refused
    path.write_text(re.sub(r'address: "[^"]+"', f'address: "http://127.0.0.1:{free_port()}/erp"',
                           path.read_text()))
    code, out = reconcile(world, "--metrics-file", str(prom))
    assert code == 3, out
    assert out.startswith("error: QueryStock: ") and "connector=erp_stock" in out
    assert prom.read_text() == "# the last good run\n"


def test_defaults_come_from_the_reconcile_section(tmp_path: Path) -> None:
    extra = "reconcile: {erp: erp_stock, shop: shop_stock, locations: [WH-01]}\n"
    for world in make_world(tmp_path, "sqlite:///var/bus.db", extra):
        result = CliRunner().invoke(cli, ["reconcile", "--config-dir", str(world.config_dir),
                                          "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert (data["erp"], data["shop"], data["locations"]) == ("erp_stock", "shop_stock",
                                                                  ["WH-01"])


def test_bad_names_are_config_errors_with_did_you_mean(world: World) -> None:
    code, out = reconcile(world, "--erp", "erp_stok")
    assert code == 2
    assert "--erp: no source or sink named 'erp_stok'" in out
    assert "did you mean 'erp_stock'?" in out
    code, out = reconcile(world, "--shop", "projection")
    assert code == 2 and "--shop: sink 'projection' (projection) cannot read stock" in out
    code, out = reconcile(world, "--location", "WH-1")
    assert code == 2
    assert "stock.locations: location 'WH-1' is not in xref table 'location'" in out
    assert "did you mean 'WH-01'?" in out
    result = CliRunner().invoke(cli, ["reconcile", "--config-dir", str(world.config_dir)])
    assert result.exit_code == 2 and "name the instance that reads stock: --erp NAME, or " \
                                      "reconcile.erp in bus.yaml" in result.output


def test_reconcile_section_names_are_checked_at_load(world: World) -> None:
    path = world.config_dir / "bus.yaml"
    path.write_text(path.read_text() + "reconcile: {erp: erp_stock, shop: shop_stok}\n")
    result = CliRunner().invoke(cli, ["lint", "--config-dir", str(world.config_dir)])
    assert result.exit_code == 2
    assert "bus.yaml:" in result.output and "reconcile.shop: no source or sink named " \
                                            "'shop_stok'" in result.output
    assert "did you mean 'shop_stock'?" in result.output


def test_comparison_rules() -> None:
    def erp(on_hand: int, reserved: int) -> StockReading:
        return StockReading("S", "L", Decimal(on_hand), Decimal(reserved),
                            Decimal(on_hand - reserved))

    def shop(available: int) -> StockReading:
        return StockReading("S", "L", available=Decimal(available), version=1)

    stock = Stock(sku="S", location="L", on_hand=Decimal(4), reserved=Decimal(6),
                  in_transit=Decimal(0), safety_stock=Decimal(3), available=Decimal(0),
                  short=Decimal(5), version=1, updated_at=datetime.now(UTC))
    # over-reserved: the shop shows 0 (never negative) and agrees; safety stock is not compared
    assert compare(erp(4, 6), stock, shop(0)) == ()
    assert compare(erp(4, 6), stock, shop(-2)) == ()
    assert compare(erp(4, 6), stock, shop(1)) == ("shop_available",)
    # no record in the ERP: it holds none
    assert compare(None, stock, None) == ("projection_on_hand", "projection_available")
    assert compare(erp(0, 0), None, shop(0)) == ()


@pytest.mark.postgres
def test_reconcile_with_the_projection_on_postgresql(tmp_path: Path,
                                                     postgres_url: str) -> None:
    for world in make_world(tmp_path, postgres_url):
        assert reconcile(world)[0] == 0
        world.erp.post_movement("GR-1", ("CAP-NVY-01", "2001", "0100"), "101", Decimal(4))
        code, data = report(world)
        assert code == 1
        (mismatch,) = data["mismatches"]
        assert (mismatch["sku"], mismatch["location"], mismatch["failed"]) == (
            "CAP-NVY-01", "WH-01", ["projection_on_hand", "projection_available"])
        assert mismatch["erp"]["on_hand"] == "24" and mismatch["projection"]["on_hand"] == "20"


class _ListingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    levels: dict[str, int]


class _Marketplace:
    """A third-party connector's sink that can also list its stock (a StockReader)."""

    def __init__(self, config: _ListingConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._levels = config.levels

    def read_stock(self, pairs: Sequence[tuple[str, str]] | None) -> list[StockReading]:
        return [StockReading(sku, "WH-01", available=Decimal(n))
                for sku, n in self._levels.items()
                if pairs is None or (sku, "WH-01") in pairs]

    def deliver(self, envelope: Envelope) -> None:
        """Listings are not updated in this test."""

    def close(self) -> None:
        """Nothing to release."""


def test_a_third_party_stock_reader_takes_part(world: World) -> None:
    path = world.config_dir / "bus.yaml"
    path.write_text(path.read_text().replace(
        "  projection: {connector: projection}",
        "  projection: {connector: projection}\n"
        "  marketplace: {connector: listing, levels: {TEE-BLK-M: 35, CAP-NVY-01: 19}}"))
    listing = ConnectorPlugin(name="listing", summary="a marketplace's listings",
                              sink_config=_ListingConfig, create_sink=_Marketplace)
    registry = Registry([make_erp_plugin(), make_shop_plugin(), projection_plugin, listing])
    with world.bus(registry) as bus:
        result = reconcile_bus(bus, erp="erp_stock", shop="marketplace", locations=["WH-01"])
    assert (result.shop, result.compared, result.mismatched) == ("marketplace", 3, 1)
    (mismatch,) = result.mismatches
    assert (mismatch.sku, mismatch.failed) == ("CAP-NVY-01", ("shop_available",))


def test_the_scheduler_reconciles_on_its_beat_and_exports_the_gauges(tmp_path: Path) -> None:
    from integration_bus.scheduler import RECONCILE_TASK, make_scheduler

    extra = ("reconcile: {erp: erp_stock, shop: shop_stock, every: 15m, "
             "metrics_file: var/bus_reconcile.prom}\n")
    for world in make_world(tmp_path, "sqlite:///var/bus.db", extra):
        registry = Registry([make_erp_plugin(), make_shop_plugin(), projection_plugin])
        world.set_shop("MUG-WHITE", 5, 10)  # one pair now differs
        scheduler = make_scheduler(world.config_dir, environ={}, registry=registry)
        try:
            entry = scheduler.app.conf.beat_schedule["reconcile"]
            assert entry["task"] == RECONCILE_TASK
            assert entry["schedule"].total_seconds() == 15 * 60
            assert entry["options"]["expires"] == 15 * 60  # missed runs do not pile up
            result = scheduler.app.tasks[RECONCILE_TASK].apply().get()
            assert (result["compared"], result["mismatched"]) == (5, 1)
            # one run at a time: while another holds the lease, a run is skipped
            store = scheduler.bus().store
            assert store.try_lease("reconcile", "elsewhere:1:1", timedelta(minutes=5))
            assert scheduler.app.tasks[RECONCILE_TASK].apply().get() == {"skipped": True}
            store.release_lease("reconcile", "elsewhere:1:1")
            text = (tmp_path / "var" / "bus_reconcile.prom").read_text()
            values = {s.name: s.value for f in text_string_to_metric_families(text)
                      for s in f.samples if not s.labels.get("check")}
            assert values["bus_reconcile_pairs_mismatched"] == 1
            served = scheduler.bus().metrics.registry.get_sample_value(
                "bus_reconcile_mismatch_ratio", {"erp": "erp_stock", "shop": "shop_stock"})
            assert served == pytest.approx(0.2)
        finally:
            scheduler.bus().close()


def test_a_scheduled_reconcile_runs_at_most_once_a_minute(tmp_path: Path) -> None:
    from tests.conftest import write_config

    config_dir = write_config(tmp_path, """
        store: {url: sqlite:///var/bus.db}
        reconcile: {erp: a, shop: b, every: 10s}
        """)
    result = CliRunner().invoke(cli, ["lint", "--config-dir", str(config_dir)])
    assert result.exit_code == 2 and "reconcile.every must be at least 1m" in result.output


def test_a_scheduled_reconcile_needs_both_instances(tmp_path: Path) -> None:
    from tests.conftest import write_config

    config_dir = write_config(tmp_path, """
        store: {url: sqlite:///var/bus.db}
        reconcile: {every: 1h}
        """)
    result = CliRunner().invoke(cli, ["lint", "--config-dir", str(config_dir)])
    assert result.exit_code == 2
    assert "a scheduled reconcile (every) needs erp and shop" in result.output
    assert "bus.yaml:2:" in result.output
