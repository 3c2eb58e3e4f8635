"""Default config, a signed webhook carrying a customer's email and phone number that is
dead-lettered (its phone fails the route's schema, and the error echoes it): neither value is
shown unmasked by ``bus dlq list/show/groups/export`` or ``bus trace``, nor stored in the
journal; ``--unmask`` shows them and leaves an audit row. Embedded mode, real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from connectors.rest_shop.fakeshop import Subscription, WebhookSender
from integration_bus.cli import cli
from integration_bus.runtime import Bus
from tests.conftest import write_config
from tests.dlq_project import OS_USER
from tests.rest_shop.support import wait_listening
from tests.support.probe import running, wait_for
from tests.support.services import free_port

SECRET = "acme-hook-secret-5c1e"
EMAIL, PHONE = "jane.roe@example.com", "+44 20 7946 0958"
PERSONAL = (EMAIL, PHONE, "7946 0958", "Roe", "Jane", "12 Hidden Lane", "jane.roe@",
            "555.0100", "sam.poe@", "Poe")
ORDER = {
    "id": 450789469, "email": EMAIL, "phone": PHONE, "total_price": "19.90",
    "customer": {"id": 207119551, "first_name": "Jane", "last_name": "Roe"},
    "shipping_address": {"address1": "12 Hidden Lane", "city": "Leeds", "country": "GB"},
    "line_items": [{"sku": "TEE-BLK-M", "quantity": 1, "price": "19.90"}],
    "note": f"if out, call {PHONE} or write to {EMAIL}",
}
# a phone written in a way no text pattern knows: masked where the error repeats it because it
# is the payload's phone
OTHER = {"id": 450789470, "email": "sam.poe@example.org", "phone": "555.0100",
         "customer": {"id": 207119552, "first_name": "Sam", "last_name": "Poe"}}
SCHEMA = {"type": "object", "required": ["id"],
          "properties": {"id": {"type": "integer"},
                         "phone": {"type": "string", "pattern": "^[0-9]{6,15}$"}}}
MAPPING = """
name: accept_web_order
input: {type: shop.shopify.order_created, schema: web_order@1}
output: {type: web.order.accepted}
steps:
  - name: keep
    map:
      order_id: "id"
"""


def bus_cli(config_dir: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args[:2], "--config-dir", str(config_dir), *args[2:]],
                                env={"ACME_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    return result.output


def test_contact_data_of_a_dead_lettered_webhook_is_masked_wherever_it_is_shown(
        tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "web_order.v1.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "accept_web_order.yaml").write_text(MAPPING)
    port = free_port()
    config_dir = write_config(tmp_path, f"""
        store: {{url: sqlite:///var/bus.db}}
        sources:
          hooks:
            connector: rest_shop
            webhooks:
              port: {port}
              shops: {{acme: {{platform: shopify, secrets: ["${{ACME_SECRET}}"]}}}}
        sinks:
          out: {{connector: jsonl, path: var/out.jsonl}}
        routes:
          orders: {{from: [shop.shopify.order_created], pipeline: accept_web_order, to: [out]}}
        """)  # no dead_letters section: the built-in masking is on by default
    # Given the order, and an authentic body that is not an object (rejected with its raw text)
    sender = WebhookSender(retry_delays=(0.05,))
    subscription = Subscription(f"http://127.0.0.1:{port}/webhooks/acme", "shopify",
                                SECRET.encode())
    with Bus.from_config_dir(config_dir, environ={"ACME_SECRET": SECRET}) as bus, \
            running(bus.run):
        wait_listening(f"http://127.0.0.1:{port}/healthz")
        for body in (ORDER, OTHER):
            (sent,) = sender.send(sender.delivery(subscription, body))
            assert sent.status == 200
        rejected = sender.send_once(sender.delivery(subscription, [ORDER]))  # type: ignore[arg-type]
        assert rejected.status == 400
        wait_for(lambda: len(bus.store.dead_letters()) == 3, message="three dead letters")
        journal = [bus.store.journal_for(d["envelope_id"]) for d in bus.store.dead_letters()]
    sender.close()
    # When an operator looks at them in every way the CLI offers
    page = json.loads(bus_cli(config_dir, "dlq", "list", "--json", "--status", "new"))
    order = next(i for i in page["items"] if i["envelope"].get("payload", {}).get("id") ==
                 ORDER["id"])
    other = next(i for i in page["items"] if i["envelope"].get("payload", {}).get("id") ==
                 OTHER["id"])
    raw = next(i for i in page["items"] if i["route"] is None)
    assert "does not match schema web_order@1" in order["message"]  # the error echoes the phone
    shown = [json.dumps(page), json.dumps(journal, default=str),
             bus_cli(config_dir, "dlq", "list"),
             bus_cli(config_dir, "dlq", "groups", "--json"),
             bus_cli(config_dir, "dlq", "export"),
             bus_cli(config_dir, "dlq", "export", "--format", "csv")]
    for letter in (order, other, raw):
        shown += [bus_cli(config_dir, "dlq", "show", letter["id"], "--json"),
                  bus_cli(config_dir, "dlq", "show", letter["id"]),
                  bus_cli(config_dir, "trace", letter["envelope_id"], "--json"),
                  bus_cli(config_dir, "trace", letter["envelope_id"])]
    # Then no personal value appears unmasked anywhere...
    for text in shown:
        for value in PERSONAL:
            assert value not in text, (value, text[:3000])
    # ...while the masked forms show the data is there
    assert order["envelope"]["payload"]["email"] == "j***@example.com"
    assert order["envelope"]["payload"]["phone"] == "***0958"
    assert "***0958" in order["message"] and "j***@example.com" in raw["envelope"]["raw"]
    assert "'***0100' does not match" in other["message"]
    assert order["envelope"]["payload"]["line_items"] == ORDER["line_items"]
    # and the stored payload is the real one: a replay sends what the shop sent
    unmasked = json.loads(bus_cli(config_dir, "dlq", "show", order["id"], "--unmask", "--json"))
    assert unmasked["envelope"]["payload"] == ORDER
    assert PHONE in unmasked["message"]
    entry = json.loads(bus_cli(config_dir, "dlq", "audit", "--json"))[0]
    assert entry["action"] == "unmask" and entry["target"] == f"show {order['id']}"
    assert entry["actor"] == OS_USER and entry["role"] == "admin" and entry["count"] == 1
