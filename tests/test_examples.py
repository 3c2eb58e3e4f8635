"""The worked examples in ``config/examples/`` (marketplace, warehouse, carrier).

Each example's own ``bus.yaml`` passes the real ``bus lint``; its mappings' sidecar tests pass
under the real ``bus test``; every source and sink it configures can be built (layouts, WSDL);
and each runs end to end on a RabbitMQ vhost against the fake system it stands for: the fake
shop playing the marketplace and the web shop, the fake ERP, a WMS share in a temp folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from click.testing import CliRunner

from connectors.rest_shop import make_plugin as make_shop_plugin
from connectors.rest_shop.fakeshop import AppServer, ShopState, Subscription, WebhookSender
from connectors.rest_shop.fakeshop.api import build_shop_app
from connectors.rest_shop.fakeshop.state import Order
from connectors.soap_erp import make_plugin as make_erp_plugin
from connectors.soap_erp.fakeerp import ErpServer, ErpState
from integration_bus.cli import cli
from integration_bus.connector import Envelope
from integration_bus.mapping import load_mappings
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from integration_bus.settings.yamlsource import load_yaml
from tests.rest_shop.support import wait_listening
from tests.support.probe import registry_with, running, wait_for
from tests.support.services import free_port

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "config" / "examples"
MAPPINGS = REPO / "mappings" / "examples"
SYSTEMS = ("marketplace", "warehouse", "carrier")
#: what each example's bus.yaml reads from the environment (the secrets; everything else has a
#: default)
SECRETS = {
    "marketplace": {"MARKETPLACE_API_TOKEN": "mkt-example-token"},
    "warehouse": {"ERP_USER": "bus", "ERP_PASSWORD": "erp-example-pw"},
    "carrier": {"CARRIER_WEBHOOK_SECRET": "parcelco-example-secret",
                "SHOP_API_TOKEN": "shpat-example-token"},
}


def bus_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


def _local_paths(tmp_path: Path) -> dict[str, str]:
    """Store, jsonl logs and the WMS shares under ``tmp_path`` (the inbox share exists)."""
    (tmp_path / "wms" / "inbox").mkdir(parents=True, exist_ok=True)
    return {"BUS_STORE_URL": f"sqlite:///{tmp_path / 'bus.db'}", "BUS_VAR_DIR": str(tmp_path),
            "WMS_INBOX": str(tmp_path / "wms" / "inbox"),
            "WMS_OUTBOX": str(tmp_path / "wms" / "outbox")}


# -- configuration: lint, sidecar tests, connectors that build --------------------------------

@pytest.mark.parametrize("system", SYSTEMS)
def test_the_example_config_passes_bus_lint_without_warnings(system: str) -> None:
    code, out = bus_cli("lint", "--config-dir", str(EXAMPLES / system), env=SECRETS[system])
    assert code == 0, out
    assert f"config/examples/{system}/bus.yaml: ok (" in out
    assert "warning" not in out


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_missing_secret_is_named_by_bus_lint(system: str) -> None:
    first, *_ = SECRETS[system]
    env: dict[str, str | None] = {**SECRETS[system], first: None}  # None: unset
    result = CliRunner().invoke(cli, ["lint", "--config-dir", str(EXAMPLES / system)], env=env)
    assert result.exit_code == 2
    assert f"environment variable {first} is not set" in result.output


@pytest.mark.parametrize("system", SYSTEMS)
def test_the_sidecar_tests_pass_under_bus_test(system: str) -> None:
    code, out = bus_cli("test", str(MAPPINGS / system), "--config-dir", str(EXAMPLES / system))
    assert code == 0, out
    passed = int(out.strip().splitlines()[-1].split()[0])
    assert passed >= 8 and " 0 failed" in out


@pytest.mark.parametrize("system", SYSTEMS)
def test_every_pipeline_of_the_example_has_sidecar_tests(system: str) -> None:
    config = load_config(EXAMPLES / system, registry_with(), SECRETS[system])
    mappings = load_mappings(config.mappings_dir, config.schemas_dir)
    named = {r.pipeline for r in config.settings.routes.values() if r.pipeline}
    assert named
    for name in named:
        source = Path(mappings[name].info.file)
        assert source.with_name(f"{source.stem}_test.yaml").is_file(), name


@pytest.mark.parametrize("system", SYSTEMS)
def test_every_source_and_sink_of_the_example_builds(system: str, tmp_path: Path) -> None:
    # `bus lint` checks the config, not the files it names: build each connector to load the
    # layouts and the WSDL as `bus run` would at start-up
    environ = {**SECRETS[system], **_local_paths(tmp_path), "BUS_BROKER_URL": ""}
    registry = registry_with(make_shop_plugin(), make_erp_plugin())
    with Bus(load_config(EXAMPLES / system, registry, environ), registry=registry) as bus:
        for name in bus.config.sources:
            bus.source(name).close()
        for name in bus.config.sinks:
            bus.sink(name).close()


def _editor_cases() -> list[Any]:
    """(file, schema it is written against) for every example file an engineer edits."""
    cases: list[Any] = []
    for system in SYSTEMS:
        cases.append(pytest.param(EXAMPLES / system / "bus.yaml", "bus.schema.json",
                                  id=f"{system}/bus.yaml"))
        for path in sorted((MAPPINGS / system).glob("*.yaml")):
            kind = "mapping-test" if path.stem.endswith("_test") else "mapping"
            cases.append(pytest.param(path, f"{kind}.schema.json", id=f"{system}/{path.name}"))
    return cases


@pytest.fixture(scope="module")
def exported_schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("schemas")
    code, out = bus_cli("schema", "export", str(directory))
    assert code == 0, out
    return directory


@pytest.mark.parametrize(("path", "schema"), _editor_cases())
def test_editors_accept_the_example_files(path: Path, schema: str,
                                          exported_schemas: Path) -> None:
    # engineers copy these files with the YAML language server pointed at `bus schema export`
    validator = jsonschema.Draft202012Validator(
        orjson.loads((exported_schemas / schema).read_bytes()))
    assert [e.message for e in validator.iter_errors(load_yaml(path).data)] == []


# -- end to end on RabbitMQ ------------------------------------------------------------------------

@contextmanager
def example_bus(system: str, environ: dict[str, str]) -> Iterator[Bus]:
    """The example's own bus.yaml, running (sources, one worker, relay) until the block ends."""
    registry = registry_with(make_shop_plugin(), make_erp_plugin())
    bus = Bus(load_config(EXAMPLES / system, registry, environ), registry=registry).open()
    try:
        with running(lambda stop: bus.run(stop)):
            yield bus
    finally:
        bus.close()


def publish(bus: Bus, message_type: str, payload: dict[str, Any], key: str) -> None:
    publisher = bus.publisher()
    try:
        publisher.publish(Envelope.create(message_type, payload, source="test",
                                          idempotency_key=key))
    finally:
        publisher.close()


def jsonl_payloads(path: Path) -> list[Any]:
    if not path.exists():
        return []
    return [orjson.loads(line)["payload"] for line in path.read_bytes().splitlines()]


@pytest.mark.rabbitmq
def test_marketplace_orders_are_polled_into_canonical_orders_and_stock_goes_back(
        tmp_path: Path, module_rabbitmq_url: str) -> None:
    # Given the marketplace (the fake shop's WooCommerce order API) with a paid order and,
    # updated before it, one still waiting for payment
    state = ShopState(token=SECRETS["marketplace"]["MARKETPLACE_API_TOKEN"])
    stamp = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    pending = Order(id=2**53 + 11, number=100481, created=stamp, updated=stamp,
                    lines=[("MKT-MUG-WHT", 1, Decimal("16.50"))], status="pending")
    paid = Order(id=2**53 + 12, number=100482, created=stamp, updated=stamp.replace(minute=5),
                 lines=[("MKT-TEE-BLK-L", 2, Decimal("14.99")),
                        ("MKT-MUG-WHT", 1, Decimal("16.50")),
                        ("", 1, Decimal("5.00"))],  # no seller SKU: held (policy "hold")
                 email="buyer@relay.example")
    state.orders.update({pending.id: pending, paid.id: paid})
    with AppServer(build_shop_app(state)) as server:
        environ = {**SECRETS["marketplace"], **_local_paths(tmp_path),
                   "BUS_BROKER_URL": module_rabbitmq_url, "MARKETPLACE_URL": server.url}
        log = tmp_path / "marketplace-orders.jsonl"
        exceptions = tmp_path / "order-line-exceptions.jsonl"
        with example_bus("marketplace", environ) as bus:
            # When the bus polls it: then the paid order arrives as one canonical order, and
            # its line without a seller SKU in the exception queue
            wait_for(lambda: len(jsonl_payloads(log)) >= 1, timeout=15,
                     message="the canonical order in the order log")
            wait_for(lambda: len(jsonl_payloads(exceptions)) >= 1, timeout=15,
                     message="the held line in the exception queue")
            # And when the ERP reports a stock level at the central warehouse
            publish(bus, "stock.level", {"sku": "TEE-BLK-L", "location": "WH-01",
                                         "on_hand": "17", "reserved": "3", "version": 184467},
                    key="erp:stock:TEE-BLK-L@WH-01#184467")
            # Then the marketplace gets it under its SKU, less the buffer, with the version
            wait_for(lambda: ("MKT-TEE-BLK-L", "WH-01") in state.inventory, timeout=15,
                     message="the marketplace's inventory level")
    held = {"line_no": 3, "sku": None, "name": "", "product_id": None, "quantity": 1,
            "unit_price": "5.00", "line_total": "5.00", "discount": "0.00", "tax": "0.00",
            "reason": "no SKU"}
    assert jsonl_payloads(log) == [{
        "order_id": f"mkt-{paid.id}", "channel": "marketplace", "order_number": "100482",
        "placed_at": "2024-03-01T09:00:00+00:00", "business_day": "2024-03-01",
        "currency": "EUR", "status": "paid",
        "customer": {"external_id": "mkt-26", "email": "buyer@relay.example",
                     "name": "Anna Schmidt"},
        "taxes_included": False,
        "lines": [{"line_no": 1, "sku": "TEE-BLK-L", "quantity": 2, "unit_price": "14.99",
                   "line_total": "29.98", "discount": "0.00", "tax": "0.00"},
                  {"line_no": 2, "sku": "MUG-WHT-01", "quantity": 1, "unit_price": "16.50",
                   "line_total": "16.50", "discount": "0.00", "tax": "0.00"}],
        "held_lines": [held],
        "subtotal": "51.48", "discount_total": "0.00", "shipping_total": "0.00",
        "fee_total": "0.00", "tax_total": "0.00", "total": "51.48"}]
    assert jsonl_payloads(exceptions) == [{
        "order_id": f"mkt-{paid.id}", "channel": "marketplace", "order_number": "100482",
        "business_day": "2024-03-01", "currency": "EUR",
        **{k: v for k, v in held.items() if k != "sku"}}]
    assert state.inventory[("MKT-TEE-BLK-L", "WH-01")] == (12, 184467)
    polls = [r.path for r in state.count_attempts("/wp-json/wc/v3/orders")]
    assert polls and all("page=" in p and "modified_after=" in p for p in polls)
    pushes = state.count_attempts("inventory_levels/set.json")
    assert [r.status for r in pushes] == [200]
    # the key derives from the level's: a redelivered level is the same request to the shop
    assert pushes[0].idempotency_key == \
        "erp:stock:TEE-BLK-L@WH-01#184467>marketplace.inventory.requested"


@pytest.mark.rabbitmq
def test_a_wms_export_becomes_canonical_adjustments_erp_postings_and_pick_lists_go_out(
        tmp_path: Path, module_rabbitmq_url: str) -> None:
    # Given the ERP (plant 2001 / storage location 0100 is WH-01) with stock to lose, and the
    # WMS's export with its marker in the inbox share
    erp_state = ErpState()
    erp_state.seed("CHOC-70-100G", "2001", "0100", 10)
    erp_state.seed("PEN-STB-RED", "2001", "0100", 5)
    paths = _local_paths(tmp_path)
    inbox = Path(paths["WMS_INBOX"])
    sample = EXAMPLES / "warehouse" / "samples" / "ADJ_WH-01_000042.CSV"
    shutil.copyfile(sample, inbox / sample.name)
    (inbox / f"{sample.name}.ok").touch()
    with ErpServer(erp_state, basic=("bus", "erp-example-pw")) as erp:
        environ = {**SECRETS["warehouse"], **paths, "BUS_BROKER_URL": module_rabbitmq_url,
                   "ERP_URL": erp.url}
        log = tmp_path / "warehouse-adjustments.jsonl"
        with example_bus("warehouse", environ) as bus:
            # When the bus runs: each adjustment reaches the log and is posted in the ERP
            wait_for(lambda: erp_state.document_count() == 3, timeout=20,
                     message="three ERP stock postings")
            wait_for(lambda: len(jsonl_payloads(log)) == 3, timeout=5,
                     message="three canonical adjustments in the log")
            archived = inbox.parent / f"{inbox.name}.work" / "archive" / sample.name
            wait_for(archived.is_file, timeout=5, message="the export archived")
            # And when stock is reserved for an order at the warehouse, a pick list goes out
            publish(bus, "stock.reserved", {
                "reservation_id": "shopify-1001/WH-01", "order_id": "shopify-1001",
                "location": "WH-01", "expires_at": "2024-03-02T10:00:00Z",
                "lines": [{"line_no": 1, "sku": "TEE-BLK-M", "quantity": 2},
                          {"line_no": 2, "sku": "MUG-WHT-01", "quantity": 1}]},
                key="erp:reservation:shopify-1001")
            outbox = Path(paths["WMS_OUTBOX"])
            wait_for(lambda: any(outbox.glob("PICK_WH-01_*.CSV.ok")), timeout=15,
                     message="the pick list and its marker")
    assert sorted((a["adjustment_id"], a["reason"], a["lines"]) for a in jsonl_payloads(log)) == [
        ("WMS-WH-01-100234", "count_gain", [{"sku": "PEN-STB-BLU", "delta": 12}]),
        ("WMS-WH-01-100235", "damaged", [{"sku": "CHOC-70-100G", "delta": -2}]),
        ("WMS-WH-01-100236", "count_loss", [{"sku": "PEN-STB-RED", "delta": -1}])]
    stock = {m: erp_state.stock[(m, "2001", "0100")].on_hand
             for m in ("PEN-STB-BLU", "CHOC-70-100G", "PEN-STB-RED")}
    assert stock == {"PEN-STB-BLU": 12, "CHOC-70-100G": 8, "PEN-STB-RED": 4}
    assert sum(erp_state.duplicates.values()) == 0
    (pick,) = outbox.glob("PICK_WH-01_*.CSV")
    assert pick.read_bytes() == (b"H;WH-01;shopify-1001;shopify-1001/WH-01;202403021100\r\n"
                                 b"L;1;TEE-BLK-M;2\r\nL;2;MUG-WHT-01;1\r\nT;2;3\r\n")


@pytest.mark.rabbitmq
def test_a_signed_carrier_pickup_becomes_a_shop_fulfilment(tmp_path: Path,
                                                           module_rabbitmq_url: str) -> None:
    # Given the web shop with an order, and the carrier's webhook subscription (signed)
    state = ShopState(token=SECRETS["carrier"]["SHOP_API_TOKEN"])
    (order,) = state.add_orders(1)
    port = free_port()
    with AppServer(build_shop_app(state)) as shop:
        environ = {**SECRETS["carrier"], **_local_paths(tmp_path),
                   "BUS_BROKER_URL": module_rabbitmq_url, "SHOP_URL": shop.url,
                   "CARRIER_HOOKS_PORT": str(port)}
        fixture = MAPPINGS / "carrier" / "fixtures" / "tracking_picked_up.json"
        picked_up = {**orjson.loads(fixture.read_bytes()), "reference": f"shopify-{order.id}"}
        in_transit = {**picked_up, "id": "evt_in_transit", "event": "in_transit",
                      "updated_at": "2024-03-01T18:02:00Z"}
        subscription = Subscription(f"http://127.0.0.1:{port}/webhooks/parcelco", "woocommerce",
                                    SECRETS["carrier"]["CARRIER_WEBHOOK_SECRET"].encode(),
                                    topic="tracking.updated")
        sender = WebhookSender(retry_delays=(0.05,))
        try:
            with example_bus("carrier", environ):
                wait_listening(f"http://127.0.0.1:{port}/healthz")
                # When the carrier posts a forged event, a later scan, then the first scan
                forged = sender.send_once(sender.delivery(subscription, picked_up),
                                          tamper="bad_hmac")
                later = sender.send_once(sender.delivery(subscription, in_transit))
                first = sender.delivery(subscription, picked_up)
                answers = [sender.send_once(first), sender.send_once(first)]
                # Then the shop gets exactly one fulfilment, with the tracking number
                wait_for(lambda: bool(state.fulfilments.get(str(order.id))), timeout=15,
                         message="the shop's fulfilment")
        finally:
            sender.close()
    assert forged.status == 401 and later.status == 200
    assert [a.status for a in answers] == [200, 200]
    assert answers[1].body["status"] == "duplicate"
    (made,) = state.fulfilments[str(order.id)]
    assert made["tracking_number"] == "00340434161234567890"
    assert made["tracking_company"] == "ParcelCo"
    assert made["line_items"] == [{"sku": "TSHIRT-BLK-M", "quantity": 2},
                                  {"sku": "MUG-WHITE", "quantity": 1}]
    assert state.effects[f"fulfilment:{made['external_ref']}"] == 1

