"""Loading a mapping through the connector API (``ConnectorContext.load_mapping``), as a plugin
does (soap_erp's request and reply mappings): on a real Bus, with the project's xref tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from integration_bus.connector import ConfigError, ConnectorContext, Envelope, Pipeline
from integration_bus.runtime import Bus

BUS_YAML = """\
store: {url: "sqlite:///var/bus.db"}
sinks:
  out: {connector: jsonl, path: var/out.jsonl}
routes:
  all: {from: [thing.created], to: [out]}
"""

MAPPING = """\
name: to_erp
input: {type: thing.created}
output: {type: thing.posted}
steps:
  - map:
      plant: "store | xref('location.erp_plant')"
      qty: "qty | integer"
"""


@pytest.fixture
def context(tmp_path: Path) -> Iterator[ConnectorContext]:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "bus.yaml").write_text(BUS_YAML)
    (tmp_path / "mappings" / "xref").mkdir(parents=True)
    (tmp_path / "mappings" / "xref" / "location.csv").write_text(
        "code,erp_plant\n0042,1042\n")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "to_erp.yaml").write_text(MAPPING)
    bus = Bus.from_config_dir(tmp_path / "config")
    try:
        yield bus.context("out")
    finally:
        bus.close()


def test_a_plugin_compiles_a_mapping_with_the_projects_xref_tables(
        context: ConnectorContext) -> None:
    pipeline = context.load_mapping("plugin/to_erp.yaml", field="request_mapping")
    assert isinstance(pipeline, Pipeline) and pipeline.name == "to_erp"
    [out] = pipeline(Envelope.create("thing.created", {"store": "0042", "qty": "3"},
                                     source="test"))
    assert out.type == "thing.posted" and out.payload == {"plant": "1042", "qty": 3}


def test_a_broken_mapping_names_its_file_line_and_the_config_key(
        context: ConnectorContext, tmp_path: Path) -> None:
    (tmp_path / "plugin" / "bad.yaml").write_text(MAPPING.replace("map:", "mapp:"))
    with pytest.raises(ConfigError) as caught:
        context.load_mapping("plugin/bad.yaml", field="reply.mapping")
    error = caught.value
    assert error.context["file"] == str(tmp_path / "plugin" / "bad.yaml")
    assert (error.context["line"], error.context["field"]) == (5, "steps[0].mapp")
    assert error.message == "unknown step 'mapp'"


def test_a_missing_mapping_file_is_a_config_error_naming_the_key(
        context: ConnectorContext) -> None:
    with pytest.raises(ConfigError) as caught:
        context.load_mapping("plugin/nowhere.yaml", field="request_mapping")
    assert caught.value.context["field"] == "request_mapping"
    assert "not found" in caught.value.message
