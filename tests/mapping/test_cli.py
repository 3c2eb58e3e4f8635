"""CLI: bus mapping run, bus test, bus schema export (click's CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from integration_bus.cli import mapping as cli

from .conftest import MAPPINGS, REPO, SCHEMAS

DIRS = ["--mappings-dir", str(MAPPINGS), "--schemas-dir", str(SCHEMAS)]


def test_run_prints_outputs() -> None:
    result = CliRunner().invoke(cli.mapping_group, [
        "run", "shopify_order", "--input",
        str(MAPPINGS / "examples" / "fixtures" / "shopify_order_paid.json"), *DIRS])
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout)
    assert outputs[0]["type"] == "order.created"
    assert outputs[0]["payload"]["total"] == "87.16"  # what the customer was charged


def test_run_reads_stdin_and_writes_exact_numbers() -> None:
    payload = {"adjustment_id": "A", "location_id": "WH-01", "reason": "theft", "version": 1,
               "occurred_at": "2024-03-01T00:00:00Z",
               "lines": [{"sku": "a", "delta": -3, "unit_cost": "2.50"}]}
    result = CliRunner().invoke(cli.mapping_group, ["run", "inventory_to_erp", "-", *DIRS],
                                input=json.dumps(payload))
    assert result.exit_code == 0, result.output
    assert '"Quantity": 3' in result.stdout and '"AmountLC": "7.50"' in result.stdout


def test_run_reports_a_typed_error_with_exit_1() -> None:
    result = CliRunner().invoke(cli.mapping_group, ["run", "pos_sale_line", "-", *DIRS],
                                input=json.dumps({"store": "0042"}))
    assert result.exit_code == 1
    assert "MappingError" in result.stderr and "step=input" in result.stderr


def test_run_usage_and_config_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli.mapping_group, ["run", "shopify_order", *DIRS]).exit_code == 2
    result = runner.invoke(cli.mapping_group, ["run", "shopify_ordr", "-", *DIRS], input="{}")
    assert result.exit_code == 2 and "did you mean 'shopify_order'" in result.stderr
    result = runner.invoke(cli.mapping_group, ["run", "shopify_order", "-", *DIRS], input="{nope")
    assert result.exit_code == 1 and "not JSON" in result.stderr


def test_dirs_default_next_to_the_config_dir() -> None:
    result = CliRunner().invoke(cli.test_command, ["--config-dir", str(REPO / "config")])
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output


def test_test_command_fails_on_a_failing_case(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("output: {type: a.b}\nsteps:\n  - map: {x: \"x * 2\"}\n")
    (tmp_path / "m_test.yaml").write_text(
        "cases:\n  - name: doubles\n    input: {x: 2}\n    expect: {output: {x: \"4\"}}\n"
        "  - name: wrong on purpose\n    input: {x: 2}\n    expect: {output: {x: \"5\"}}\n")
    result = CliRunner().invoke(cli.test_command, [str(tmp_path), "--mappings-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "wrong on purpose" in result.output
    assert "x: expected text '5', got text '4'" in result.output
    assert "1 passed, 1 failed" in result.output


def test_schema_export_writes_valid_json_schemas(tmp_path: Path) -> None:
    from integration_bus.cli import cli as bus_cli

    result = CliRunner().invoke(bus_cli, ["schema", "export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    mapping_schema = json.loads((tmp_path / "out" / "mapping.schema.json").read_text())
    sidecar_schema = json.loads((tmp_path / "out" / "mapping-test.schema.json").read_text())
    assert "steps" in mapping_schema["properties"]
    assert "cases" in sidecar_schema["properties"]
