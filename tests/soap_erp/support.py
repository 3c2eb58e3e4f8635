"""Helpers for the soap_erp tests: a project dir with the ERP's WSDL shipped in its config, a bus
on a fresh RabbitMQ vhost (or embedded) with the soap_erp sink/source, and postings to send."""

from __future__ import annotations

import shutil
from pathlib import Path

from connectors.soap_erp import make_plugin
from connectors.soap_erp.fakeerp import WSDL_DIR
from integration_bus.connector import ConnectorPlugin, Envelope
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from integration_bus.testing import bus_running as bus_running
from tests.support.probe import Target, probe_plugin, registry_with

SECRETS = {"ERP_USER": "bus-user", "ERP_PASSWORD": "s3cret-erp-pw"}
POSTING_TYPE = "erp.stock_posting.requested"
DEFAULT_ROUTE = """
  unused: {from: [test.unused], to: [probe]}"""


def project(root: Path) -> Path:
    """A project dir whose config ships the ERP's WSDL and XSDs in ``config/erp/``."""
    shutil.copytree(WSDL_DIR, root / "config" / "erp", dirs_exist_ok=True)
    return root


def sink_yaml(url: str, *, name: str = "erp", operation: str = "PostStockAdjustment",
              port: str = "StockPort", service: str = "ErpService", extra: str = "",
              numbering: str = "{field: DocumentHeader.ExternalReference}",
              lookup: str = "{operation: FindDocument}", timeout: str = "2s",
              failures: int = 5, open_for: str = "1s") -> str:
    return f"""
  {name}:
    connector: soap_erp
    wsdl: config/erp/erp.wsdl
    service: {service}
    port: {port}
    address: "{url}"
    operation: {operation}
    document_number: {numbering}
    lookup: {lookup}
    timeouts: {{connect: 1s, operation: {timeout}}}
    breaker: {{failures: {failures}, open_for: {open_for}}}{extra}"""


def write_config(root: Path, broker_url: str, *, sinks: str = "", sources: str = "",
                 routes: str = "", tiers: str = "[100ms, 300ms, 1s]") -> Path:
    project(root)
    text = f"""broker: {{url: "{broker_url}", retry_tiers: {tiers}}}
store: {{url: sqlite:///var/bus.db}}
sources:{sources or " {}"}
sinks:
  probe: {{connector: probe}}{sinks}
routes:{routes or DEFAULT_ROUTE}
"""
    (root / "config" / "bus.yaml").write_text(text)
    return root / "config"


def open_bus(config_dir: Path, target: Target | None = None,
             plugin: ConnectorPlugin | None = None) -> Bus:
    registry: Registry = registry_with(probe_plugin(target or Target()),
                                       plugin or make_plugin())
    return Bus(load_config(config_dir, registry, SECRETS), registry=registry).open()


def posting(n: int, *, movement: str = "701", quantity: int = 1, material: str = "MAT-1",
            key: str | None = None) -> Envelope:
    """A stock posting request as the inventory_to_erp mapping makes them."""
    return Envelope.create(POSTING_TYPE, {
        "DocumentHeader": {"ExternalReference": "set-by-the-sink", "PostingDate": "2024-03-01",
                           "HeaderText": "Inventory count +"},
        "Item": {"Material": material, "Plant": "1042", "StorageLocation": "0001",
                 "MovementType": movement, "Quantity": quantity, "UnitOfEntry": "EA",
                 "SourceVersion": n}},
        source="test", idempotency_key=key or f"adj-{n}")
