"""Who may do what with dead letters (the OS user's role from bus.yaml), the tamper-evident
audit, and hostile markup in data — through the CLI (CliRunner), embedded mode."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from integration_bus.cli import cli
from integration_bus.envelope import Envelope
from integration_bus.runtime import Bus
from tests.conftest import write_config
from tests.dlq_project import OS_USER, make_project, order
from tests.support.probe import running, wait_for

HOSTILE = "[/][bold][link=https://evil.example]click here[/link]\x1b[2J"
CONFIG = """
    store: {url: sqlite:///var/bus.db}
    sinks:
      out: {connector: jsonl, path: var/out.jsonl}
      broken: {connector: jsonl, path: mappings}   # a directory: every append fails
    routes:
      orders:
        from: [shop.order]
        pipeline: accept_order
        to: [out]
        retry: {max_attempts: 2, initial_delay: 100ms}
      notes:
        from: [shop.note]
        to: [broken]
        retry: {max_attempts: 1}
    """


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with four dead letters: a bad quantity, an unknown store whose code is hostile
    markup, a note on a route without a schema, and a customer's contact data in each."""
    root = tmp_path_factory.mktemp("roles")
    make_project(root, "")
    config_dir = write_config(root, CONFIG)
    hostile = order(2, "store")
    hostile = Envelope.create("shop.order", {**hostile.payload, "store": HOSTILE,
                                             "sku": HOSTILE}, source="shop")
    note = Envelope.create("shop.note", {"text": HOSTILE, "email": "ann@example.com"},
                           source="shop")
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        publisher = bus.publisher()
        assert publisher.publish_many([order(1, "qty"), hostile, note]) == [None] * 3
        publisher.close()
        with running(lambda stop: bus.run(stop, sources=[])):
            wait_for(lambda: len(bus.store.dead_letters()) == 3, message="3 dead letters")
    return root


@pytest.fixture
def project(built: Path, tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "project"
    shutil.copytree(built, root)
    yield root / "config"


def as_role(config_dir: Path, role: str) -> None:
    bus_yaml = config_dir / "bus.yaml"
    bus_yaml.write_text(bus_yaml.read_text() + f"operators: {{users: {{{OS_USER}: {role}}}}}\n")


def dlq(config_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["dlq", args[0], "--config-dir", str(config_dir),
                                      *args[1:]])
    return result.exit_code, result.output


def letter_id(config_dir: Path, route: str) -> str:
    code, out = dlq(config_dir, "list", "--route", route, "--json")
    assert code == 0, out
    return str(json.loads(out)["items"][0]["id"])


def audit(config_dir: Path) -> list[dict[str, object]]:
    code, out = dlq(config_dir, "audit", "--json")
    assert code == 0, out
    return list(json.loads(out))


def test_a_viewer_reads_masked_data_but_cannot_replay_unmask_or_discard(project: Path) -> None:
    as_role(project, "viewer")
    code, out = dlq(project, "list", "--json")
    assert code == 0 and json.loads(out)["total"] == 3
    assert "@example.com" in out and "customer1@" not in out and "ann@" not in out
    ident = letter_id(project, "orders")
    for args, action in ((("replay", "--route", "orders"), "replay"),
                         (("replay", "--route", "orders", "--dry-run"), "dry-run"),
                         (("show", ident, "--unmask"), "unmask"),
                         (("discard", ident, "--reason", "x"), "discard")):
        code, out = dlq(project, *args)
        assert code == 3, (args, out)
        assert f"not allowed: {OS_USER} (viewer) may not {action}" in out
    code, out = dlq(project, "list", "--json")
    assert json.loads(out)["total"] == 3  # nothing moved
    denied = [a for a in audit(project) if a["outcome"] == "denied"]
    assert [a["action"] for a in denied] == ["discard", "unmask", "dry-run", "replay"]
    assert all(a["actor"] == OS_USER and a["role"] == "viewer" for a in denied)


def test_an_operator_replays_and_discards_but_cannot_unmask_purge_edit_or_force(
        project: Path) -> None:
    as_role(project, "operator")
    ident = letter_id(project, "notes")
    for args, action in ((("show", ident, "--unmask"), "unmask"),
                         (("export", "--unmask"), "unmask"),
                         (("list", "--unmask"), "unmask"),
                         (("purge", "--older-than", "0s"), "purge"),
                         (("edit", ident, "--set", "text=fixed"), "edit"),
                         (("replay", ident, "--force"), "force")):
        code, out = dlq(project, *args)
        assert code == 3 and f"(operator) may not {action}" in out, (args, out)
    code, out = dlq(project, "replay", "--route", "orders", "--dry-run", "--json")
    assert code == 0, out
    code, out = dlq(project, "discard", ident, "--reason", "a test note")
    assert code == 0 and "discarded 1" in out
    code, out = dlq(project, "replay", "--route", "orders")
    assert code == 0 and "queued 2 replay(s)" in out
    code, out = dlq(project, "audit", "--verify")
    assert code == 0 and "audit log intact" in out


def test_an_admin_unmasks_edits_and_purges_and_an_unchecked_edit_is_marked(
        project: Path) -> None:
    # the OS user owning bus.yaml is an admin by default (config_owner: admin)
    ident = letter_id(project, "notes")
    code, out = dlq(project, "show", ident, "--unmask", "--json")
    assert code == 0 and json.loads(out)["envelope"]["payload"]["email"] == "ann@example.com"
    code, out = dlq(project, "edit", ident, "--set", "email=bea@example.com")
    assert code == 0 and "the route has no schema: the edit was stored unchecked" in out
    assert '+  "email": "bea@example.com"' in out  # the admin sees the real diff
    edit = next(a for a in audit(project) if a["action"] == "edit")
    assert edit["outcome"] == "ok" and edit["role"] == "admin"
    assert edit["detail"]["unchecked"] is True and edit["detail"]["validated_against"] is None
    assert "bea@example.com" not in json.dumps(edit) and "ann@example.com" not in json.dumps(edit)
    code, out = dlq(project, "discard", ident, "--reason", "x")
    code, out = dlq(project, "purge", "--older-than", "0s")
    assert code == 0 and "purged 1" in out
    assert [a["action"] for a in audit(project)][:4] == ["purge", "discard", "edit", "unmask"]


def test_a_refused_edit_keeps_only_a_masked_diff(project: Path) -> None:
    ident = letter_id(project, "orders")
    code, out = dlq(project, "edit", ident, "--set", "qty=lots", "--set",
                    "email=new.address@example.org")
    assert code == 1 and "does not match schema shop_order@1" in out
    refused = next(a for a in audit(project) if a["action"] == "edit")
    assert refused["outcome"] == "refused" and "new.address" not in json.dumps(refused)
    assert "n***@example.org" in refused["detail"]["diff"]


def test_text_search_is_audited_without_the_searched_value(project: Path) -> None:
    as_role(project, "viewer")
    code, out = dlq(project, "list", "--text", "customer1@example.com", "--json")
    assert code == 0 and json.loads(out)["total"] == 1
    search = audit(project)[0]
    assert search["action"] == "search" and search["count"] == 1
    assert "c***@example.com" in str(search["target"])
    assert "customer1@" not in json.dumps(search)


def test_audit_verify_finds_an_edited_row(project: Path) -> None:
    as_role(project, "operator")
    ident = letter_id(project, "notes")
    assert dlq(project, "discard", ident, "--reason", "first")[0] == 0
    assert dlq(project, "restore", ident, "--reason", "second")[0] == 0
    code, out = dlq(project, "audit", "--verify", "--json")
    head = json.loads(out)["head"]
    assert code == 0 and json.loads(out)["ok"] is True
    # Given someone rewrites who discarded it, straight in the database
    with sqlite3.connect(project.parent / "var" / "bus.db") as db:
        db.execute("UPDATE dlq_audit SET actor = 'someone-else' WHERE action = 'discard'")
    # Then the verification names the row and fails
    code, out = dlq(project, "audit", "--verify")
    assert code == 1
    assert "tampered: row" in out and "does not match its hash: it was changed" in out
    assert "audit log TAMPERED" in out
    # and deleting the newest row instead shows against the head kept from before
    with sqlite3.connect(project.parent / "var" / "bus.db") as db:
        db.execute("UPDATE dlq_audit SET actor = ? WHERE action = 'discard'", (OS_USER,))
        db.execute("DELETE FROM dlq_audit WHERE action = 'restore'")
        db.execute("UPDATE cursors SET value = (SELECT id || ':' || hash FROM dlq_audit "
                   "ORDER BY id DESC LIMIT 1) WHERE key = 'audit:head'")
    assert dlq(project, "audit", "--verify")[0] == 0  # consistent on its own...
    code, out = dlq(project, "audit", "--verify", "--head", head)
    assert code == 1 and f"not the {head} you kept" in out  # ...but not the head kept


def test_markup_and_control_characters_in_data_are_printed_as_text(project: Path) -> None:
    ident = letter_id(project, "orders")
    code, out = dlq(project, "list", "--json", "--route", "orders")
    hostile = next(i for i in json.loads(out)["items"] if i["step"] == "plant")
    outputs = []
    for args in (("list",), ("show", hostile["id"]), ("groups",), ("audit",),
                 ("replay", "--route", "orders", "--dry-run"), ("show", ident)):
        code, out = dlq(project, *args)
        assert code == 0, (args, out)
        outputs.append(out)
    result = CliRunner().invoke(cli, ["trace", "--config-dir", str(project),
                                      hostile["envelope_id"]])
    assert result.exit_code == 0, result.output
    outputs.append(result.output)
    shown = "\n".join(outputs)
    assert "[/][bold][link=https://evil.example]" in shown  # printed, never interpreted
    assert "\x1b" not in shown and "\\x1b[2J" in shown
