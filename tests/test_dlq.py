"""The dead-letter console end to end on RabbitMQ: group, fix, replay, resume, edit, audit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from integration_bus.cli import cli
from integration_bus.store import Store
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
from tests.support.probe import wait_for

pytestmark = pytest.mark.rabbitmq
REPO = Path(__file__).resolve().parent.parent


def bus_cli(config_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*args[:2], "--config-dir", str(config_dir), *args[2:]])
    return result.exit_code, result.output


def statuses(root: Path) -> dict[str, int]:
    store = Store.open(f"sqlite:///{root / 'var' / 'bus.db'}")
    try:
        out: dict[str, int] = {}
        for row in store.dead_letters(limit=100_000):
            out[row["status"]] = out.get(row["status"], 0) + 1
        return out
    finally:
        store.close()


def test_ten_thousand_with_three_kinds_of_poison_fixed_and_replayed(
        tmp_path: Path, rabbitmq_url: str) -> None:
    # Given 10,000 orders of which 100 are poison in three different ways
    config_dir = make_project(tmp_path, rabbitmq_url)
    kinds = ["qty"] * 34 + ["store"] * 33 + ["sku"] * 33
    poison = {n * 97 + 5: kind for n, kind in enumerate(kinds)}
    publish(config_dir, [order(n, poison.get(n)) for n in range(10_000)])
    with worker(config_dir) as bus:
        wait_for(lambda: len(effects(tmp_path)) == 9_900 and
                 len(bus.store.dead_letters(limit=1000)) == 100, timeout=120,
                 message="9,900 delivered and 100 dead letters")
    # Then exactly 100 dead letters in 3 groups
    code, out = bus_cli(config_dir, "dlq", "groups", "--json")
    assert code == 0, out
    groups = json.loads(out)
    assert sorted(g["count"] for g in groups) == [33, 33, 34]
    assert {g["step"] for g in groups} == {"parse", "plant", "check"}
    # When the mapping is fixed and each group is replayed
    set_mapping(tmp_path, FIXED)
    with worker(config_dir) as bus:
        for group in groups:
            code, out = bus_cli(config_dir, "dlq", "replay", "--group", group["group"])
            assert code == 0, out
            assert f"replayed {group['count']} of {group['count']}" in out
        wait_for(lambda: len(effects(tmp_path)) == 10_000, timeout=60, message="all delivered")
        # And again: nothing left to replay; restored and replayed: the ledger absorbs them all
        code, out = bus_cli(config_dir, "dlq", "replay", "--route", "orders")
        assert code == 0 and "replayed 0 of 0" in out
        code, out = bus_cli(config_dir, "dlq", "restore", "--route", "orders", "--status",
                            "replayed", "--reason", "check the ledger")
        assert code == 0 and "restored 100" in out
        code, out = bus_cli(config_dir, "dlq", "replay", "--route", "orders")
        assert code == 0 and "replayed 100 of 100" in out
        wait_for(lambda: bus.store.count_events("duplicate", route="orders") == 100,
                 timeout=60, message="100 duplicates recorded")
    keys = effects(tmp_path)
    assert len(keys) == 10_000 and len(set(keys)) == 10_000  # 0 new effects the second time
    assert statuses(tmp_path) == {"replayed": 100}


def test_replay_killed_half_way_resumes_without_loss_or_doubles(tmp_path: Path,
                                                                rabbitmq_url: str) -> None:
    config_dir = make_project(tmp_path, rabbitmq_url)
    publish(config_dir, [order(n, "qty") for n in range(1000)])
    with worker(config_dir) as bus:
        wait_for(lambda: len(bus.store.dead_letters(limit=2000)) == 1000, timeout=60)
    set_mapping(tmp_path, FIXED)
    command = [sys.executable, "-m", "integration_bus", "dlq", "replay", "--config-dir",
               str(config_dir), "--route", "orders"]
    with worker(config_dir):
        # Given a rate-limited bulk replay killed with SIGKILL half-way
        with (tmp_path / "replay.log").open("wb") as log:
            proc = subprocess.Popen([*command, "--rate", "100"], cwd=REPO, stdout=log,
                                    stderr=log)
            wait_for(lambda: statuses(tmp_path).get("replayed", 0) >= 300, timeout=60,
                     message="a third replayed")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        half = statuses(tmp_path)
        assert half.get("new", 0) + half.get("replaying", 0) > 0  # really interrupted
        # When it is run again
        rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                               env={**os.environ}, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        wait_for(lambda: len(effects(tmp_path)) >= 1000, timeout=60, message="all delivered")
    # Then each was delivered exactly once and no dead letter is left in between
    keys = effects(tmp_path)
    assert len(keys) == 1000 and len(set(keys)) == 1000
    assert statuses(tmp_path) == {"replayed": 1000}


def test_edit_is_validated_audited_and_delivered(tmp_path: Path, rabbitmq_url: str) -> None:
    config_dir = make_project(tmp_path, rabbitmq_url)
    publish(config_dir, [order(1, "qty")])
    with worker(config_dir) as bus:
        wait_for(lambda: len(bus.store.dead_letters()) == 1)
        (letter,) = bus.store.dead_letters()
        # An invalid edit is refused with the schema error; nothing stored, nothing sent
        code, out = bus_cli(config_dir, "dlq", "edit", letter["id"], "--set", "qty=lots")
        assert code == 1
        assert "does not match schema shop_order@1" in out and "qty" in out
        assert bus.store.dead_letters()[0]["edited_payload"] is None
        assert bus.store.outbox_waiting() == 0 and effects(tmp_path) == []
        # A valid one is stored with its diff, replayed and delivered
        code, out = bus_cli(config_dir, "dlq", "edit", letter["id"], "--set", "qty=2",
                            "--replay")
        assert code == 0, out
        assert '-  "qty": "2 pcs"' in out and '+  "qty": 2' in out
        wait_for(lambda: len(effects(tmp_path)) == 1, message="edited order delivered")
    code, out = bus_cli(config_dir, "dlq", "audit", "--json")
    audit = json.loads(out)
    edits = [a for a in audit if a["action"] == "edit"]
    assert [e["outcome"] for e in edits] == ["ok", "refused"]  # newest first
    assert all(e["actor"] == OS_USER and e["role"] == "admin" for e in audit)
    assert '+  "qty": 2' in edits[0]["detail"]["diff"]
    code, out = bus_cli(config_dir, "dlq", "show", letter["id"], "--json")
    shown = json.loads(out)
    assert shown["envelope"]["payload"]["qty"] == "2 pcs"  # the original is kept
    assert shown["edited_payload"]["qty"] == 2
    assert shown["replay_history"][0]["outcome"] == "delivered"
