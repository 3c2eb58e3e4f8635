"""Loading bus.yaml: ten typical mistakes, each with file:line:col and a hint; interpolation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from integration_bus.cli import cli
from integration_bus.errors import ConfigError
from integration_bus.registry import Registry
from integration_bus.settings import ConfigErrors, load_config
from tests.conftest import write_config

GOOD = """\
broker:
  url: ""
sources:
  orders_in:
    connector: jsonl
    path: data/orders.jsonl
    type: order.created
sinks:
  out:
    connector: jsonl
    path: var/out.jsonl
routes:
  orders:
    from: [order.created]
    to: [out]
"""

# (name, replace-this, with-this, expected "line:col: field: problem" fragment, hint fragment)
MISTAKES = [
    ("unknown top-level key", "broker:\n", "brokr:\n", ":1:1: brokr: unknown key 'brokr'",
     "did you mean 'broker'?"),
    ("unknown key in a route", "    to: [out]\n", "    to: [out]\n    retyr: {}\n",
     ":16:5: routes.orders.retyr: unknown key 'retyr'", "did you mean 'retry'?"),
    ("wrong type", "  url: \"\"\n", "  url: \"\"\n  prefetch: lots\n",
     ":3:13: broker.prefetch: Input should be a valid integer", "write a whole number"),
    ("missing env var", "  url: \"\"\n", "  url: ${BROKER_URL_NOT_SET}\n",
     ":2:8: broker.url: environment variable BROKER_URL_NOT_SET is not set",
     "${BROKER_URL_NOT_SET:-default}"),
    ("unknown connector", "    connector: jsonl\n    path: var",
     "    connector: jsnol\n    path: var",
     ":10:16: sinks.out.connector: unknown connector 'jsnol'", "did you mean 'jsonl'?"),
    ("route to a missing sink", "    to: [out]", "    to: [otu]",
     ":15:10: routes.orders.to[0]: no sink named 'otu'", "did you mean 'out'?"),
    ("alias used", "    to: [out]\n", "    to: &sinks [out]\n  copy:\n    from: [x.y]\n"
     "    to: *sinks\n", ":15:9: YAML anchors (&name) are not allowed", "repeat the value"),
    ("unknown key in a connector's config", "    path: var/out.jsonl\n",
     "    path: var/out.jsonl\n    fsycn: true\n", ":12:5: sinks.out.fsycn: unknown key 'fsycn'",
     "did you mean 'fsync'?"),
    ("bad type pattern", "    from: [order.created]", "    from: [order..created]",
     ":14:11: routes.orders.from: 'order..created' is not a type pattern", None),
    ("custom tag", "  url: \"\"\n", "  url: !vault secret/broker\n",
     ":2:8: YAML tag '!vault' is not allowed", "remove the tag"),
    ("missing required key", "    path: data/orders.jsonl\n", "",
     ":4:3: sources.orders_in: missing required key 'path'", None),
    ("a source used as a sink", "    to: [out]", "    to: [orders_in]",
     ":15:10: routes.orders.to[0]: no sink named 'orders_in'", "is a source"),
    # a config problem found by the connector's model, at load (was a PermanentError at start)
    ("jsonl payload lines without a type", "    type: order.created\n", "    format: payload\n",
     ":5:5: sources.orders_in: format 'payload' needs a message type", None),
]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_entry_points()


def test_good_config_loads(tmp_path: Path, registry: Registry) -> None:
    config = load_config(write_config(tmp_path, GOOD), registry, {})
    assert config.embedded and list(config.settings.routes) == ["orders"]
    assert config.sinks["out"].config.path == "var/out.jsonl"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "old", "new", "where", "hint"), MISTAKES,
                         ids=[m[0] for m in MISTAKES])
def test_typical_mistake_names_file_line_and_hint(tmp_path: Path, registry: Registry, name: str,
                                                  old: str, new: str, where: str,
                                                  hint: str | None) -> None:
    assert old in GOOD, name
    config_dir = write_config(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir, registry, {})
    text = str(caught.value)
    assert f"{config_dir / 'bus.yaml'}{where}" in text
    if hint:
        assert "hint: " in text and hint in text


def test_all_problems_are_reported_together(tmp_path: Path, registry: Registry) -> None:
    text = GOOD.replace("broker:", "brokr:").replace("to: [out]", "to: [otu]")
    with pytest.raises(ConfigErrors) as caught:
        load_config(write_config(tmp_path, text), registry, {})
    assert len(caught.value.errors) == 2


def test_interpolation_with_defaults_and_escapes(tmp_path: Path, registry: Registry) -> None:
    text = GOOD.replace('  url: ""', '  url: "${BROKER:-}"').replace(
        "path: var/out.jsonl", "path: ${OUT_DIR:-var}/out-$${literal}.jsonl")
    config = load_config(write_config(tmp_path, text), registry, {"OUT_DIR": "/data"})
    assert config.settings.broker.url is None
    assert config.sinks["out"].config.path == "/data/out-${literal}.jsonl"  # type: ignore[attr-defined]


def test_secrets_from_env_are_not_echoed_in_errors(tmp_path: Path, registry: Registry) -> None:
    text = GOOD.replace('  url: ""', '  url: ""\n  prefetch: ${PREFETCH}')
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, text), registry, {"PREFETCH": "hunter2"})
    assert "hunter2" not in str(caught.value)


def test_oversized_file_is_refused(tmp_path: Path, registry: Registry) -> None:
    config_dir = write_config(tmp_path, GOOD + "#" + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="the limit is 1048576"):
        load_config(config_dir, registry, {})


def test_duplicate_key_is_refused_with_position(tmp_path: Path, registry: Registry) -> None:
    config_dir = write_config(tmp_path, GOOD + "routes:\n  x: {}\n")
    with pytest.raises(ConfigError, match=r"bus.yaml:\d+:\d+: invalid YAML: .*duplicate"):
        load_config(config_dir, registry, {})


def test_lint_cli_reports_ok_and_problems(tmp_path: Path) -> None:
    runner = CliRunner()
    config_dir = write_config(tmp_path, GOOD)
    ok = runner.invoke(cli, ["lint", "--config-dir", str(config_dir)])
    assert ok.exit_code == 0, ok.output
    assert "ok (1 routes, 1 sources, 1 sinks)" in ok.output
    write_config(tmp_path, GOOD.replace("to: [out]", "to: [otu]"))
    bad = runner.invoke(cli, ["lint", "--config-dir", str(config_dir)])
    assert bad.exit_code == 2
    assert "bus.yaml:15:10: routes.orders.to[0]: no sink named 'otu'" in bad.output


def test_lint_warns_about_unroutable_sources(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, GOOD.replace("type: order.created", "type: order.new"))
    result = CliRunner().invoke(cli, ["lint", "--config-dir", str(config_dir)])
    assert result.exit_code == 0
    assert "source 'orders_in' publishes 'order.new', which no route takes" in result.output


def test_exported_schema_validates_the_shipped_config(tmp_path: Path) -> None:
    import json

    import jsonschema

    from integration_bus.settings.yamlsource import load_yaml

    result = CliRunner().invoke(cli, ["schema", "export", str(tmp_path / "schemas")])
    assert result.exit_code == 0, result.output
    schema = json.loads((tmp_path / "schemas" / "bus.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    shipped = load_yaml(Path(__file__).resolve().parent.parent / "config" / "bus.yaml").data
    assert list(validator.iter_errors(shipped)) == []
    assert shipped["sources"]["shop_hooks"]["webhooks"]["port"].startswith("${")  # interpolated
    shipped["sources"]["shop_hooks"]["webhooks"]["port"] = "eighty"  # neither int nor ${ENV}
    assert list(validator.iter_errors(shipped))
    shipped["sources"]["shop_hooks"]["webhooks"]["port"] = 8088
    assert list(validator.iter_errors(shipped)) == []
    shipped["broker"]["retry_tiers"] = ["1s", "${SLOW_TIER:-5m}"]  # inside a list, too
    assert list(validator.iter_errors(shipped)) == []
    shipped["broker"]["retry_tiers"] = ["1s", "slowly"]
    assert list(validator.iter_errors(shipped))
    shipped["broker"]["retry_tiers"] = ["1s"]
    shipped["sinks"]["order_gate"]["locaton"] = "WH-01"  # a typo in a connector's own config
    assert list(validator.iter_errors(shipped))
    for name in ("mapping.schema.json", "mapping-test.schema.json"):
        assert (tmp_path / "schemas" / name).exists()


def test_lint_build_loads_what_the_connectors_name_and_locates_each_problem(
        tmp_path: Path) -> None:
    import shutil

    repo = Path(__file__).resolve().parent.parent
    for part in ("config", "mappings", "schemas"):
        shutil.copytree(repo / part, tmp_path / part)
    config_dir = str(tmp_path / "config")
    runner = CliRunner()
    # The plain lint does not look at folders and files; --build does, as start-up would
    assert runner.invoke(cli, ["lint", "--config-dir", config_dir]).exit_code == 0
    result = runner.invoke(cli, ["lint", "--build", "--config-dir", config_dir])
    assert result.exit_code == 2
    assert re.search(r"bus.yaml:\d+:\d+: sources.tills.inboxes\[0\].path: inbox .* is not a "
                     r"folder", result.output), result.output
    (tmp_path / "var" / "pos" / "inbox").mkdir(parents=True)
    result = runner.invoke(cli, ["lint", "--build", "--config-dir", config_dir])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "var" / "bus.db").exists()  # a scratch store, not the configured one
    # A layout with a typo: the error names the layout's own line, and the instance
    layout = tmp_path / "config" / "layouts" / "stock_download.yaml"
    layout.write_text(layout.read_text().replace("header_row: true", "header_rows: true"))
    result = runner.invoke(cli, ["lint", "--build", "--config-dir", config_dir])
    assert result.exit_code == 2
    assert re.search(r"stock_download.yaml:\d+:\d+: header_rows: unknown key 'header_rows' "
                     r"\(instance=sinks.store_stock_files\)", result.output), result.output
    # A WSDL that is not there: located at the instance's key in bus.yaml
    (tmp_path / "config" / "erp" / "erp.wsdl").unlink()
    result = runner.invoke(cli, ["lint", "--build", "--config-dir", config_dir])
    assert result.exit_code == 2 and "sinks.erp_postings" in result.output, result.output
