"""Every ``bus dlq`` command's output and exit codes (CliRunner), embedded and on RabbitMQ."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from integration_bus.cli import cli
from integration_bus.runtime import Bus
from tests.dlq_project import (
    FIXED,
    OS_USER,
    effects,
    make_project,
    order,
    publish,
    set_mapping,
    worker,
)
from tests.support.probe import running, wait_for


def run(config_dir: Path, *args: str, stdout_only: bool = False) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["dlq", args[0], "--config-dir", str(config_dir),
                                      *args[1:]])
    return result.exit_code, result.stdout if stdout_only else result.output


@pytest.fixture
def project(tmp_path: Path, rabbitmq_url: str) -> Path:
    """Three dead letters (one of each kind) and one delivered order, on RabbitMQ."""
    config_dir = make_project(tmp_path, rabbitmq_url)
    publish(config_dir, [order(1, "qty"), order(2, "store"), order(3, "sku"), order(4)])
    with worker(config_dir) as bus:
        wait_for(lambda: len(bus.store.dead_letters()) == 3 and len(effects(tmp_path)) == 1)
    return config_dir


@pytest.mark.rabbitmq
def test_list_show_groups_with_redaction_and_audited_unmask(project: Path) -> None:
    code, out = run(project, "list")
    assert code == 0 and "dead letters (3 match; page 1)" in out
    assert "parse" in out and "plant" in out and "check" in out
    code, out = run(project, "list", "--json", "--step", "plant")
    page = json.loads(out)
    assert page["total"] == 1 and page["items"][0]["step"] == "plant"
    assert page["items"][0]["envelope"]["payload"]["email"] == "c***@example.com"
    ident = page["items"][0]["id"]
    code, out = run(project, "show", ident)
    assert code == 0
    for part in ("MappingError", "no entry for '9999'", "attempts", "replays: none",
                 "c***@example.com", "Traceback"):
        assert part in out, part
    code, out = run(project, "show", ident, "--unmask", "--json")
    assert json.loads(out)["envelope"]["payload"]["email"] == "customer2@example.com"
    code, out = run(project, "audit", "--json")
    assert json.loads(out)[0]["action"] == "unmask" and json.loads(out)[0]["actor"] == OS_USER
    code, out = run(project, "groups")
    assert code == 0 and "failure groups (3 dead letters)" in out
    code, out = run(project, "list", "--text", "9999", "--json")
    assert json.loads(out)["total"] == 1
    code, out = run(project, "list", "--since", "1h", "--until", "2099-01-01", "--json")
    assert json.loads(out)["total"] == 3
    code, out = run(project, "list", "--since", "yesterday-ish")
    assert code == 2 and "neither a time" in out
    code, out = run(project, "show", "01NOTHERE")
    assert code == 1 and "no dead letter '01NOTHERE'" in out


@pytest.mark.rabbitmq
def test_dry_run_shows_current_pipeline_and_sends_nothing(project: Path) -> None:
    code, out = run(project, "replay", "--route", "orders", "--dry-run", "--json")
    assert code == 0, out
    assert all(p["error"] and "MappingError" in p["error"]
               for p in json.loads(out)["previews"])  # the broken mapping fails them again
    set_mapping(project.parent, FIXED)
    code, out = run(project, "replay", "--route", "orders", "--dry-run", "--json")
    assert code == 0, out
    previews = json.loads(out)
    assert previews["total"] == 3
    assert all(p["error"] is None and len(p["outputs"]) == 1 for p in previews["previews"])
    assert all(p["outputs"][0]["type"] == "shop.order.accepted" for p in previews["previews"])
    assert all(list(p["effects"].values()) == ["deliver"] for p in previews["previews"])
    code, out = run(project, "list", "--json")
    assert json.loads(out)["total"] == 3  # nothing moved
    code, out = run(project, "replay")
    assert code == 2 and "say what to replay" in out


@pytest.mark.rabbitmq
def test_discard_restore_purge_export_and_to_route(project: Path) -> None:
    code, out = run(project, "discard", "--step", "check", "--reason", "test orders")
    assert code == 0 and "discarded 1" in out
    code, out = run(project, "list", "--status", "discarded", "--json")
    assert json.loads(out)["items"][0]["status_reason"] == "test orders"
    code, out = run(project, "restore", "--step", "check", "--reason", "wrong call")
    assert code == 0 and "restored 1" in out
    code, out = run(project, "export", "--format", "csv", stdout_only=True)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3 and "c***@example.com" in rows[0]["payload"]
    code, out = run(project, "export", "--unmask", stdout_only=True)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 3 and "@example.com" in lines[0]["envelope"]["payload"]["email"]
    code, out = run(project, "replay", "--route", "orders", "--to-route", "nowhere")
    assert code == 2 and "no route named 'nowhere'" in out
    code, out = run(project, "discard", "--route", "orders", "--reason", "cleanup")
    code, out = run(project, "purge", "--older-than", "0s")
    assert code == 0 and "purged 3" in out
    code, out = run(project, "audit")
    assert code == 0
    for action in ("discard", "restore", "export", "purge"):
        assert action in out
    code, out = run(project, "purge", "--older-than", "soon")
    assert code == 2 and "not a duration" in out


def test_replay_in_embedded_mode_goes_through_the_running_bus(tmp_path: Path) -> None:
    config_dir = make_project(tmp_path, "")
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        publisher = bus.publisher()
        assert publisher.publish_many([order(1, "qty"), order(2)]) == [None, None]
        with running(lambda stop: bus.run(stop, sources=[])):
            wait_for(lambda: len(bus.store.dead_letters()) == 1 and len(effects(tmp_path)) == 1)
            old = bus.pipelines()["accept_order"].version
            set_mapping(tmp_path, FIXED)  # the running bus reloads it (checks every second)
            wait_for(lambda: bus.pipelines()["accept_order"].version != old, message="reload")
            code, out = run(config_dir, "replay", "--route", "orders")
            assert code == 0 and "queued 1 replay(s) in the outbox" in out
            wait_for(lambda: len(effects(tmp_path)) == 2, message="relayed and delivered")
        assert bus.store.dead_letters(status="replayed")


@pytest.mark.rabbitmq
def test_force_resets_the_ledger_of_the_mapped_outputs(project: Path) -> None:
    set_mapping(project.parent, FIXED)
    with worker(project):
        code, out = run(project, "replay", "--route", "orders")
        assert code == 0 and "replayed 3 of 3" in out
        wait_for(lambda: len(effects(project.parent)) == 4)
        run(project, "restore", "--route", "orders", "--status", "replayed", "--reason", "lost")
        code, out = run(project, "replay", "--route", "orders", "--force")
        assert code == 0 and "ledger rows reset: 3" in out  # the outputs' keys, not the input's
        wait_for(lambda: len(effects(project.parent)) == 7, message="delivered again")
    code, out = run(project, "audit", "--json")
    assert json.loads(out)[0]["detail"]["force"] is True
