"""A small project for dead-letter tests: a mapping with three ways to fail, and its fix."""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from integration_bus.envelope import Envelope
from integration_bus.runtime import Bus
from tests.conftest import write_config
from tests.support.probe import running

#: who the CLI says acted: the OS user running the tests (identities are not self-declared)
OS_USER = pwd.getpwuid(os.getuid()).pw_name

INPUT_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object", "required": ["order_id", "qty", "store"],
    "properties": {"order_id": {"type": "string"}, "sku": {"type": "string"},
                   "store": {"type": "string"},
                   "qty": {"type": ["integer", "string"], "pattern": "^[0-9]+( pcs)?$"},
                   "email": {"type": "string"}},
}
OUTPUT_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object", "required": ["order_id", "sku", "qty", "plant"],
    "properties": {"order_id": {"type": "string"}, "sku": {"type": "string"},
                   "qty": {"type": "integer"}, "store": {"type": "string"},
                   "plant": {"type": "string"}},
}
BROKEN = """
name: accept_order
input: {type: shop.order, schema: shop_order@1}
output: {type: shop.order.accepted}
steps:
  - name: parse
    map:
      order_id: "order_id"
      sku: "sku"
      qty: "qty | integer"
      store: "store"
  - name: plant
    lookup: {key: store, table: location, column: erp_plant, into: plant}
  - name: check
    validate: accepted_order@1
"""
FIXED = """
name: accept_order
input: {type: shop.order, schema: shop_order@1}
output: {type: shop.order.accepted}
steps:
  - name: parse
    map:
      order_id: "order_id"
      sku: "coalesce(sku, 'UNKNOWN')"
      qty: "qty | string | replace(' pcs', '') | integer"
      store: "store"
  - name: plant
    lookup: {key: store, table: location, column: erp_plant, into: plant, default: "0000"}
  - name: check
    validate: accepted_order@1
"""


def make_project(root: Path, broker_url: str) -> Path:
    (root / "mappings" / "xref").mkdir(parents=True)
    (root / "schemas").mkdir()
    (root / "mappings" / "xref" / "location.csv").write_text(
        "code,erp_plant\n0042,1042\n0043,1043\n")
    (root / "schemas" / "shop_order.v1.json").write_text(json.dumps(INPUT_SCHEMA))
    (root / "schemas" / "accepted_order.v1.json").write_text(json.dumps(OUTPUT_SCHEMA))
    set_mapping(root, BROKEN)
    return write_config(root, f"""
        broker: {{url: "{broker_url}", prefetch: 300, batch_size: 100}}
        store: {{url: sqlite:///var/bus.db}}
        dead_letters:
          redact: [email]
        sinks:
          out: {{connector: jsonl, path: var/out.jsonl}}
        routes:
          orders:
            from: [shop.order]
            pipeline: accept_order
            to: [out]
            retry: {{max_attempts: 2, initial_delay: 100ms}}
        """)


def set_mapping(root: Path, text: str) -> None:
    path = root / "mappings" / "accept_order.yaml"
    path.write_text(text)
    stamp = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def order(n: int, kind: str | None = None) -> Envelope:
    payload = {"order_id": f"W-{n:05d}", "sku": f"SKU-{n % 7}", "qty": "2", "store": "0042",
               "email": f"customer{n}@example.com"}
    if kind == "qty":
        payload["qty"] = "2 pcs"
    elif kind == "store":
        payload["store"] = "9999"
    elif kind == "sku":
        del payload["sku"]
    return Envelope.create("shop.order", payload, source="shop")


def effects(root: Path) -> list[str]:
    out = root / "var" / "out.jsonl"
    if not out.exists():
        return []
    return [orjson.loads(line)["idempotency_key"]
            for line in out.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]


@contextmanager
def worker(config_dir: Path) -> Iterator[Bus]:
    """A bus worker in a thread, with the mapping as it is on disk now."""
    with Bus.from_config_dir(config_dir, environ={}) as bus, running(bus.worker().run):
        yield bus


def publish(config_dir: Path, envelopes: list[Envelope]) -> None:
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        publisher = bus.publisher()
        for start in range(0, len(envelopes), 1000):
            chunk = envelopes[start:start + 1000]
            assert publisher.publish_many(chunk) == [None] * len(chunk)
        publisher.close()

