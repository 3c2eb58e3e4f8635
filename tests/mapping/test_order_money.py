"""Order money (issue 13): Shopify, WooCommerce and marketplace orders with tax, discounts and
shipping map to canonical orders (canonical_order@2) whose money adds up (lines - discounts +
shipping + fees + tax = total) and whose total is what the customer was charged; one that does
not add up is a business dead letter naming the figures; a line without a SKU is held or
dead-letters the order, as the channel's policy says."""

from __future__ import annotations

import json
import re
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from integration_bus.envelope import Envelope
from integration_bus.errors import CheckFailed
from integration_bus.mapping.loader import Loader
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from tests.conftest import write_config
from tests.support.probe import Target, probe_plugin, registry_with, running, wait_for

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "mappings"
EXAMPLES = MAPPINGS / "examples"
LOADER = Loader(xref_dir=MAPPINGS / "xref", schemas_dir=REPO / "schemas")
MONEY = re.compile(r"^-?[0-9]+\.[0-9]{2}$")
MONEY_FIELDS = ("subtotal", "discount_total", "shipping_total", "fee_total", "tax_total", "total")


def fixture(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text(), parse_float=Decimal)


def run(mapping: str, payload: Any, loader: Loader = LOADER) -> dict[str, Any]:
    path = next(EXAMPLES.rglob(f"{mapping}.yaml"))
    ((_, order),) = loader.load(path).run(payload)
    return dict(order)


@pytest.mark.parametrize(("mapping", "example", "charged"), [
    ("shopify_order", "fixtures/shopify_order_paid.json", "total_price"),
    ("shopify_order", "fixtures/shopify_order_tax_included.json", "total_price"),
    ("woocommerce_order", "fixtures/woocommerce_order.json", "total"),
    ("woocommerce_order", "fixtures/woocommerce_order_tax_included.json", "total"),
    ("marketplace_order", "marketplace/fixtures/marketplace_order.json", "total"),
])
def test_an_order_maps_to_money_that_adds_up_to_what_the_customer_was_charged(
        mapping: str, example: str, charged: str) -> None:
    payload = fixture(example)
    order = run(mapping, payload)
    # money is decimal text with two places, never a float, per line and per order
    lines = order["lines"] + order.get("held_lines", [])
    for line in lines:
        assert all(MONEY.match(line[f]) for f in ("unit_price", "line_total", "discount", "tax"))
    assert all(MONEY.match(order[f]) for f in MONEY_FIELDS), order
    subtotal, discounts, shipping, fees, tax, total = (Decimal(order[f]) for f in MONEY_FIELDS)
    # the identity, computed here independently of the mapping's own check
    assert sum(Decimal(line["line_total"]) for line in lines) == subtotal
    added_tax = Decimal(0) if order["taxes_included"] else tax
    assert subtotal - discounts + shipping + fees + added_tax == total
    # the total is the channel's charged amount — not the line sum, which differs here
    assert total == Decimal(str(payload[charged]))
    assert total != subtotal
    # the per-line discounts and taxes account for the order's (shipping's are the rest)
    assert sum(Decimal(line["discount"]) for line in lines) <= discounts
    assert sum(Decimal(line["tax"]) for line in lines) <= tax


def test_an_order_whose_money_does_not_add_up_is_a_business_dead_letter_with_the_figures(
        tmp_path: Path) -> None:
    # Given the route of the scenario's web orders, embedded, with the project's mappings
    for part in ("mappings", "schemas"):
        (tmp_path / part).symlink_to(REPO / part)
    config_dir = write_config(tmp_path, """
        store: {url: "sqlite:///var/bus.db"}
        sinks:
          orders: {connector: probe}
        routes:
          web_orders: {from: [shop.shopify.order_created], pipeline: shopify_order, to: [orders]}
        """)
    target = Target()
    registry = registry_with(probe_plugin(target))
    good = fixture("fixtures/shopify_order_paid.json")
    wrong = {**good, "id": 820982911946154509, "total_price": "80.06"}  # only the lines
    with Bus(load_config(config_dir, registry, {}), registry=registry) as bus:
        publisher = bus.publisher()
        publisher.publish_many([
            Envelope.create("shop.shopify.order_created", json.loads(json.dumps(order,
                            default=str)), source="shop", idempotency_key=f"shop:{order['id']}")
            for order in (good, wrong)])
        publisher.close()
        # When a worker maps them
        with running(bus.worker().run):
            wait_for(lambda: target.count() == 1 and len(bus.store.dead_letters()) == 1,
                     message="one order delivered, one dead letter")
        # Then the good one is delivered and the wrong one is a dead letter naming the figures
        (delivered,) = target.envelopes
        assert delivered.payload["total"] == "87.16"
        (letter,) = bus.store.dead_letters()
    assert (letter["error_type"], letter["route"], letter["step"]) == (
        "CheckFailed", "web_orders", "money_adds_up")
    assert ("order #1001: lines 80.06 - discounts 5.00 + shipping 5.00 + fees 0.00 + tax 7.10 "
            "= 87.16, but the customer was charged 80.06") in letter["message"]
    assert "tax_total=7.10" in letter["message"] and "total=80.06" in letter["message"]


def test_a_line_without_a_sku_is_held_or_dead_letters_the_order_as_the_policy_says(
        tmp_path: Path) -> None:
    payload = fixture("fixtures/woocommerce_order.json")
    # Given the shipped policy for WooCommerce: hold — the order goes on without the line,
    # whose money still counts, and the line goes to the exception queue as its own message
    order = run("woocommerce_order", payload)
    assert [line["sku"] for line in order["lines"]] == ["HOOD-GRY-M", "CAP-NVY-01"]
    assert [(h["line_no"], h["name"], h["reason"]) for h in order["held_lines"]] == [
        (3, "Gift wrapping", "no SKU")]
    held = LOADER.load(EXAMPLES / "order_held_lines.yaml")
    envelope = Envelope.create("order.created", order, source="bus", idempotency_key="k")
    (exception,) = held(envelope)
    assert (exception.type, exception.idempotency_key) == ("order.line_held",
                                                          "order.line_held:woo-727/3")
    assert exception.payload["line_total"] == "3.00"
    # When the policy says dead_letter instead, the whole order fails, naming the line
    xref = tmp_path / "xref"
    shutil.copytree(MAPPINGS / "xref", xref)
    policy = xref / "order_policy.yaml"
    policy.write_text(policy.read_text().replace("woocommerce: {missing_sku: hold}",
                                                 "woocommerce: {missing_sku: dead_letter}"))
    strict = Loader(xref_dir=xref, schemas_dir=REPO / "schemas")
    with pytest.raises(CheckFailed) as caught:
        run("woocommerce_order", payload, strict)
    assert caught.value.message.startswith(
        "order 727: line(s) 3 (Gift wrapping) have no SKU, and the woocommerce policy is "
        "dead_letter")
    assert caught.value.context["step"] == "lines_without_sku"
