"""docs/plugins.md's worked example, run as printed: the plugin code and the bus.yaml snippet are
read from the page (between ``<!-- test:plugin-... -->`` markers), so the guide cannot drift."""

from __future__ import annotations

import csv
import re
import types
from pathlib import Path

import pytest

from integration_bus.connector import ConnectorPlugin, Envelope
from integration_bus.errors import ConfigError
from integration_bus.runtime import Bus
from integration_bus.settings import ConfigErrors, load_config
from tests.conftest import write_config
from tests.support.probe import registry_with, running, wait_for

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "plugins.md").read_text()


def _block(marker: str, language: str) -> str:
    after = DOC.split(f"<!-- test:{marker} -->", 1)[1]
    found = re.search(rf"```{language}\n(.*?)```", after, re.S)
    assert found, f"docs/plugins.md: no {language} block after {marker}"
    return found.group(1)


def _plugin() -> ConnectorPlugin:
    module = types.ModuleType("csv_rows_example")
    exec(compile(_block("plugin-code", "python"), "docs/plugins.md", "exec"), module.__dict__)
    plugin = module.__dict__["plugin"]
    assert isinstance(plugin, ConnectorPlugin)
    return plugin


def _config(root: Path) -> Path:
    (root / "var").mkdir(exist_ok=True)
    store = f'store: {{url: "sqlite:///{root / "var" / "bus.db"}"}}\n'
    return write_config(root, store + _block("plugin-config", "yaml"))


def test_the_example_plugin_delivers_rows_and_dead_letters_what_does_not_fit(
        tmp_path: Path) -> None:
    # Given the page's plugin and config in an embedded bus
    plugin = _plugin()
    registry = registry_with(plugin)
    config_dir = _config(tmp_path)
    with Bus(load_config(config_dir, registry, {}), registry=registry).open() as bus:
        sales = [Envelope.create("sale.recorded", {"store": "0042", "sku": f"SKU-{i}",
                                                   "quantity": i}, source="test")
                 for i in range(1, 6)]
        no_sku = Envelope.create("sale.recorded", {"store": "0042", "quantity": 1},
                                 source="test")
        # When they are published and the bus runs
        with running(bus.run):
            publisher = bus.publisher()
            assert publisher.publish_many([*sales, no_sku]) == [None] * 6
            publisher.close()
            out = tmp_path / "var" / "sales.csv"
            wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 5
                     and len(bus.store.dead_letters()) == 1, timeout=30,
                     message="five rows and one dead letter")
        # Then each sale is one row keyed by its idempotency key, and the one without a SKU
        # is a dead letter naming the field
        with out.open(newline="") as handle:
            rows = list(csv.reader(handle))
        assert [r[0] for r in rows] == [e.idempotency_key for e in sales]
        assert rows[0][1:] == ["0042", "SKU-1", "1"]
        (letter,) = bus.store.dead_letters()
        assert "'sku'" in letter["message"] and letter["error_type"] == "PermanentError"
        # and lookup answers for a delivered key, not for another
        sink = bus.sink("sales_csv")
        assert sink.lookup(sales[0]) is True and sink.lookup(no_sku) is False


def test_the_example_config_model_refuses_a_typo_and_a_missing_folder(tmp_path: Path) -> None:
    registry = registry_with(_plugin())
    config_dir = _config(tmp_path)
    text = (config_dir / "bus.yaml").read_text()
    (config_dir / "bus.yaml").write_text(text.replace("fields:", "feilds:"))
    with pytest.raises(ConfigErrors, match="feilds"):
        load_config(config_dir, registry, {})
    (config_dir / "bus.yaml").write_text(text.replace("var/sales.csv", "nowhere/sales.csv"))
    with Bus(load_config(config_dir, registry, {}), registry=registry).open() as bus, \
            pytest.raises(ConfigError, match="does not exist"):
        bus.sink("sales_csv")


def test_the_services_example_runs_as_printed() -> None:
    module = types.ModuleType("services_example")
    exec(compile(_block("services", "python"), "docs/plugins.md", "exec"), module.__dict__)
    assert module.__dict__["probe"] is False  # a closed breaker: a normal call
