"""The operators' console (``bus console``): logins, roles, CSRF, dead-letter pages and actions,
the overview — through FastAPI's TestClient against a real SQLite store, and the same audit
log as the CLI's (``bus dlq audit --verify``)."""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from integration_bus.cli import cli
from integration_bus.operators import Operator
from integration_bus.runtime import Bus
from integration_bus.web.console.accounts import Accounts, LoginLimiter
from integration_bus.web.console.app import make_app
from tests.console_support import HOSTILE, PASSWORD, build, csrf, login
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

SECRET = "s" * 48


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("console")
    build(root)
    return root


@pytest.fixture
def project(built: Path, tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(built, root)
    return root / "config"


@pytest.fixture
def bus(project: Path) -> Iterator[Bus]:
    with Bus.from_config_dir(project, environ={}) as opened:
        yield opened


@pytest.fixture
def client(bus: Bus) -> Iterator[TestClient]:
    with TestClient(make_app(bus, secret=SECRET)) as test_client:
        yield test_client


def audit_rows(project: Path) -> list[dict[str, object]]:
    with sqlite3.connect(project.parent / "var" / "bus.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM dlq_audit ORDER BY id")]


def verified(project: Path) -> None:
    result = CliRunner().invoke(cli, ["dlq", "audit", "--verify", "--config-dir", str(project)])
    assert result.exit_code == 0 and "audit log intact" in result.output, result.output


def statuses(bus: Bus) -> dict[str, str]:
    return {r["envelope"]["payload"]["order_id"]: r["status"] for r in bus.store.dead_letters()}


def group_of(client: TestClient, error_text: str) -> str:
    page = client.get("/dead-letters")
    for row in page.text.split("<tr>"):
        if error_text in row:
            found = re.search(r'name="group" value="([0-9a-f]+)"', row) or \
                re.search(r"group=([0-9a-f]+)", row)
            assert found, row
            return found.group(1)
    raise AssertionError(f"no group about {error_text!r} in {page.text}")


def test_login_sets_a_signed_strict_httponly_expiring_cookie_and_logout_ends_it(
        client: TestClient, project: Path) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    token = csrf(client)
    answer = client.post("/login", data={"user": "viewer", "password": PASSWORD,
                                         "csrf": token}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=28800" in cookie
    home = client.get("/")
    assert home.status_code == 200 and "viewer" in home.text and "orders" in home.text
    assert "script-src 'self'" in home.headers["content-security-policy"]
    assert home.headers["x-frame-options"] == "DENY"
    # a tampered cookie is no session
    value = client.cookies["bus_console"]
    client.cookies.clear()
    client.cookies.set("bus_console", value[:-4] + ("AAAA" if value[-4:] != "AAAA" else "BBBB"))
    assert client.get("/", follow_redirects=False).status_code == 303
    client.cookies.clear()
    login(client, "viewer")
    logout = client.post("/logout", data={"csrf": csrf(client, "/")}, follow_redirects=False)
    assert logout.status_code == 303
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    logins = [(r["actor"], r["action"], r["outcome"]) for r in audit_rows(project)
              if r["action"] in ("login", "logout")]
    assert logins == [("viewer", "login", "ok"), ("viewer", "login", "ok"),
                      ("viewer", "logout", "ok")]


def test_a_session_ends_after_its_lifetime(bus: Bus) -> None:
    now = [1_000_000.0]
    app = make_app(bus, secret=SECRET, lifetime=3600, clock=lambda: now[0])
    with TestClient(app) as expiring:
        login(expiring, "viewer")
        now[0] += 3600
        assert expiring.get("/", follow_redirects=False).status_code == 200
        now[0] += 1
        assert expiring.get("/", follow_redirects=False).headers["location"] == "/login"


def test_a_wrong_password_is_refused_and_audited(client: TestClient, project: Path) -> None:
    for user in ("admin", "nobody"):
        answer = client.post("/login", data={"user": user, "password": "wrong password!",
                                             "csrf": csrf(client)}, follow_redirects=False)
        assert answer.status_code == 401 and "wrong user name or password" in answer.text
        assert "bus_console" not in answer.headers.get("set-cookie", "") or \
            client.get("/", follow_redirects=False).status_code == 303
    refused = [(r["actor"], r["outcome"]) for r in audit_rows(project) if r["action"] == "login"]
    assert refused == [("admin", "refused"), ("-", "refused")]


def test_logins_are_rate_limited_per_user_and_address(bus: Bus) -> None:
    with TestClient(make_app(bus, secret=SECRET, limiter=LoginLimiter(attempts=3))) as client:
        for _ in range(3):
            answer = client.post("/login", data={"user": "admin", "password": "nope nope nope",
                                                 "csrf": csrf(client)})
            assert answer.status_code == 401
        # now even the right password is refused until the window moves on
        answer = client.post("/login", data={"user": "admin", "password": PASSWORD,
                                             "csrf": csrf(client)}, follow_redirects=False)
        assert answer.status_code == 429 and "too many failed logins" in answer.text
        # another user from the same address is not locked out
        login(client, "viewer")


def test_a_post_without_the_sessions_csrf_token_is_refused(client: TestClient, bus: Bus,
                                                          project: Path) -> None:
    answer = client.post("/login", data={"user": "operator", "password": PASSWORD},
                         follow_redirects=False)
    assert answer.status_code == 403 and "CSRF" in answer.text
    login(client, "operator")
    group = group_of(client, "2 pcs")
    for token in (None, "forged-token"):
        data = {"group": group, **({"csrf": token} if token else {})}
        answer = client.post("/dead-letters/replay", data=data, follow_redirects=False)
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert set(statuses(bus).values()) == {"new"}  # nothing moved
    assert not [r for r in audit_rows(project) if r["action"] == "replay"]


def test_a_viewer_sees_masked_groups_without_actions_and_a_forged_replay_is_refused(
        client: TestClient, bus: Bus, project: Path) -> None:
    login(client, "viewer")
    groups = client.get("/dead-letters")
    assert groups.status_code == 200 and "Replay group" not in groups.text
    listing = client.get(f"/dead-letters/list?group={group_of(client, '2 pcs')}")
    assert listing.text.count('href="/dead-letters/') >= 2 and "Replay ticked" not in listing.text
    ident = re.search(r'href="/dead-letters/([0-9A-Za-z]+)"', listing.text)
    assert ident
    letter = client.get(f"/dead-letters/{ident.group(1)}")
    assert letter.status_code == 200 and "@example.com" in letter.text
    assert "customer1@" not in letter.text and "customer2@" not in letter.text
    assert "Replay" not in letter.text and "unmask" not in letter.text
    assert client.get(f"/dead-letters/{ident.group(1)}?unmask=1").status_code == 403
    # a replay POST forged with the viewer's own (valid) CSRF token
    answer = client.post("/dead-letters/replay",
                         data={"group": group_of(client, "2 pcs"), "csrf": csrf(client, "/")})
    assert answer.status_code == 403 and "viewer (viewer) may not replay" in answer.text
    assert set(statuses(bus).values()) == {"new"}
    denied = [(r["actor"], r["role"], r["action"]) for r in audit_rows(project)
              if r["outcome"] == "denied"]
    assert denied == [("viewer", "viewer", "unmask"), ("viewer", "viewer", "replay")]
    verified(project)


def test_an_operator_replays_a_group_and_the_running_bus_delivers_it(
        client: TestClient, bus: Bus, project: Path) -> None:
    # Given the mapping is fixed
    set_mapping(project.parent, FIXED)
    login(client, "operator")
    group = group_of(client, "2 pcs")
    # When the operator replays the group from the groups page
    answer = client.post("/dead-letters/replay",
                         data={"group": group, "csrf": csrf(client, "/dead-letters"),
                               "next": "/dead-letters"})
    assert answer.status_code == 200 and "queued 2 replay(s)" in answer.text
    assert statuses(bus)["W-00001"] == "replaying" and statuses(bus)["W-00003"] == "new"
    # Then a running bus relays them through the route and they are delivered
    with Bus.from_config_dir(project, environ={}) as runner, \
            running(lambda stop: runner.run(stop, sources=[])):
        wait_for(lambda: len(effects(project.parent)) >= 2, message="2 deliveries")
        wait_for(lambda: statuses(bus)["W-00002"] == "replayed", message="replayed")
    assert len(effects(project.parent)) == 2
    replays = [r for r in audit_rows(project) if r["action"] == "replay"]
    assert [(r["actor"], r["role"], r["count"]) for r in replays] == [("operator", "operator", 2)]
    verified(project)


def test_an_operator_discards_with_a_reason_but_cannot_edit(client: TestClient, bus: Bus,
                                                            project: Path) -> None:
    login(client, "operator")
    ident = next(r["id"] for r in bus.store.dead_letters()
                 if r["envelope"]["payload"]["order_id"] == "W-00003")
    token = csrf(client, f"/dead-letters/{ident}")
    refused = client.post("/dead-letters/discard", data={"id": ident, "csrf": token})
    assert refused.status_code == 400 and "say why" in refused.text
    answer = client.post("/dead-letters/discard",
                         data={"id": ident, "csrf": token, "reason": "store closed",
                               "next": f"/dead-letters/{ident}"})
    assert answer.status_code == 200 and "discarded 1" in answer.text
    assert statuses(bus)["W-00003"] == "discarded"
    assert client.get(f"/dead-letters/{ident}/edit").status_code == 403
    assert client.post(f"/dead-letters/{ident}/edit",
                       data={"csrf": token, "payload": "{}"}).status_code == 403
    verified(project)


def test_an_admin_edit_that_fails_the_schema_shows_the_error_and_changes_nothing(
        client: TestClient, bus: Bus, project: Path) -> None:
    login(client, "admin")
    row = next(r for r in bus.store.dead_letters()
               if r["envelope"]["payload"]["order_id"] == "W-00001")
    form = client.get(f"/dead-letters/{row['id']}/edit")
    assert form.status_code == 200 and "customer1@example.com" in form.text  # unmasked, audited
    token = csrf(client, "/")
    bad = client.post(f"/dead-letters/{row['id']}/edit",
                      data={"csrf": token, "payload": '{"order_id": "W-00001", "store": "0042"}'})
    assert bad.status_code == 422 and "qty" in bad.text and 'aria-invalid="true"' in bad.text
    not_json = client.post(f"/dead-letters/{row['id']}/edit",
                           data={"csrf": token, "payload": '{"order_id": '})
    assert not_json.status_code == 422 and "not JSON" in not_json.text
    after = next(r for r in bus.store.dead_letters() if r["id"] == row["id"])
    assert after["edited_payload"] is None and after["status"] == "new"
    # a valid edit is stored and replayed
    good = client.post(f"/dead-letters/{row['id']}/edit", data={
        "csrf": token, "replay": "1",
        "payload": '{"order_id": "W-00001", "sku": "S", "qty": "3", "store": "0042"}'})
    assert good.status_code == 200 and "edit stored" in good.text and "queued 1" in good.text
    after = next(r for r in bus.store.dead_letters() if r["id"] == row["id"])
    assert after["edited_payload"]["qty"] == "3" and after["status"] == "replaying"
    edits = [(r["actor"], r["outcome"]) for r in audit_rows(project) if r["action"] == "edit"]
    assert edits == [("admin", "refused"), ("admin", "ok")]
    verified(project)


def test_hostile_markup_in_data_is_escaped_everywhere(client: TestClient, bus: Bus) -> None:
    login(client, "admin")
    ident = next(r["id"] for r in bus.store.dead_letters()
                 if r["envelope"]["payload"]["store"] == HOSTILE)
    for path in ("/dead-letters", "/dead-letters/list", f"/dead-letters/{ident}",
                 f"/dead-letters/{ident}?unmask=1", f"/dead-letters/{ident}/edit", "/audit"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
    assert "&lt;script&gt;" in client.get(f"/dead-letters/{ident}").text


def test_the_overview_shows_each_route_and_its_dead_letters(client: TestClient) -> None:
    login(client, "viewer")
    page = client.get("/")
    assert page.status_code == 200
    row = re.search(r"<td>orders</td>(.*?)</tr>", page.text, re.S)
    assert row, page.text
    numbers = re.findall(r'<td class="n">(?:<a [^>]*>)?(\d+|\S)', row.group(1))
    received, delivered, _filtered, _dup, backlog, _retry, dead = numbers[:7]
    assert (received, delivered, backlog, dead) == ("4", "0", "0", "4")
    fragment = client.get("/overview/table")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "orders" in fragment.text


def test_bus_users_add_list_remove(project: Path) -> None:
    runner = CliRunner()
    base = ["--config-dir", str(project)]
    added = runner.invoke(cli, ["users", "add", "dana", "--role", "operator", *base],
                          input="a long enough secret\n")
    assert added.exit_code == 0, added.output
    short = runner.invoke(cli, ["users", "add", "eve", "--role", "viewer", *base], input="x\n")
    assert short.exit_code == 2 and "too short" in short.output
    listed = runner.invoke(cli, ["users", "list", *base])
    assert re.search(r"^dana\toperator\t", listed.output, re.M), listed.output
    assert runner.invoke(cli, ["users", "remove", "dana", *base]).exit_code == 0
    assert "dana" not in runner.invoke(cli, ["users", "list", *base]).output
    # only admins (bus.yaml's operators) manage users; the refusal is audited
    bus_yaml = project / "bus.yaml"
    bus_yaml.write_text(bus_yaml.read_text() + f"operators: {{users: {{{OS_USER}: operator}}}}\n")
    denied = runner.invoke(cli, ["users", "add", "mallory", "--role", "admin", *base],
                           input="a long enough secret\n")
    assert denied.exit_code == 3 and "may not users" in denied.output
    actions = [(r["action"], r["outcome"]) for r in audit_rows(project)
               if r["action"].startswith("users-")]
    assert actions[-3:] == [("users-add", "ok"), ("users-remove", "ok"), ("users-add", "denied")]
    verified(project)


def test_a_replay_preview_shows_what_the_current_mapping_would_send_and_sends_nothing(
        client: TestClient, bus: Bus, project: Path) -> None:
    set_mapping(project.parent, FIXED)
    login(client, "viewer")
    group = group_of(client, "2 pcs")
    assert client.get(f"/dead-letters/preview?group={group}").status_code == 403
    client.post("/logout", data={"csrf": csrf(client, "/")})
    login(client, "operator")
    page = client.get(f"/dead-letters/preview?group={group}")
    assert page.status_code == 200 and page.text.count("<h3>shop.order.accepted") == 2
    assert "deliver" in page.text and "Replay 2 now" in page.text
    assert "customer1@" not in page.text
    assert set(statuses(bus).values()) == {"new"}
    dry = [(r["actor"], r["outcome"], r["count"]) for r in audit_rows(project)
           if r["action"] in ("dry-run", "replay-dry-run")]
    assert dry == [("viewer", "denied", 0), ("operator", "ok", 2)]


def test_an_operator_restores_a_discarded_letter_and_an_admin_purges(
        client: TestClient, bus: Bus, project: Path) -> None:
    login(client, "operator")
    ident = next(r["id"] for r in bus.store.dead_letters()
                 if r["envelope"]["payload"]["order_id"] == "W-00003")
    token = csrf(client, "/")
    client.post("/dead-letters/discard", data={"id": ident, "csrf": token, "reason": "x"})
    assert statuses(bus)["W-00003"] == "discarded"
    assert client.post("/dead-letters/purge", data={"csrf": token, "days": "0"}
                       ).status_code == 403
    answer = client.post("/dead-letters/restore", data={"id": ident, "csrf": token,
                                                        "reason": "store reopened"})
    assert answer.status_code == 200 and "restored 1" in answer.text
    client.post("/dead-letters/discard", data={"id": ident, "csrf": token, "reason": "again"})
    client.post("/logout", data={"csrf": token})
    login(client, "admin")
    answer = client.post("/dead-letters/purge", data={"csrf": csrf(client, "/"), "days": "0"})
    assert answer.status_code == 200 and "purged 1" in answer.text
    assert "W-00003" not in statuses(bus) and len(statuses(bus)) == 3
    verified(project)


def test_an_admin_sees_the_diff_of_an_edit_before_saving_it(client: TestClient, bus: Bus) -> None:
    login(client, "admin")
    row = next(r for r in bus.store.dead_letters()
               if r["envelope"]["payload"]["order_id"] == "W-00002")
    page = client.post(f"/dead-letters/{row['id']}/edit", data={
        "csrf": csrf(client, "/"), "diff": "1",
        "payload": '{"order_id": "W-00002", "sku": "SKU-2", "qty": "2", "store": "0042"}'})
    assert page.status_code == 200
    assert '-  &#34;qty&#34;: &#34;2 pcs&#34;' in page.text
    assert '+  &#34;qty&#34;: &#34;2&#34;' in page.text
    assert next(r for r in bus.store.dead_letters()
                if r["id"] == row["id"])["edited_payload"] is None


@pytest.mark.rabbitmq
def test_with_rabbitmq_an_operators_group_replay_is_published_and_delivered(
        tmp_path: Path, rabbitmq_url: str) -> None:
    # Given two orders dead-lettered by a worker on RabbitMQ, and the mapping fixed since
    config_dir = make_project(tmp_path, rabbitmq_url)
    publish(config_dir, [order(1, "qty"), order(2, "qty"), order(3)])
    with worker(config_dir) as running_bus:
        wait_for(lambda: len(running_bus.store.dead_letters()) == 2 and
                 len(effects(tmp_path)) == 1, message="1 delivered, 2 dead letters")
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        Accounts(bus.store.db).add("olga", "operator", PASSWORD, by=Operator.system("test"))
    set_mapping(tmp_path, FIXED)
    with worker(config_dir), Bus.from_config_dir(config_dir, environ={}) as bus, \
            TestClient(make_app(bus, secret=SECRET)) as client:
        # When an operator replays the group in the console
        login(client, "olga")
        answer = client.post("/dead-letters/replay", data={
            "group": group_of(client, "2 pcs"), "csrf": csrf(client, "/")})
        # Then the console published them (as `bus dlq replay` does) and the route delivers
        assert answer.status_code == 200 and "queued 2 replay(s); published 2" in answer.text
        wait_for(lambda: len(effects(tmp_path)) == 3, message="3 delivered")
        assert set(statuses(bus).values()) == {"replayed"}


def test_bus_console_serves_until_sigterm_and_keeps_its_session_secret(project: Path) -> None:
    # Given `bus console` started on a free port
    command = [sys.executable, "-m", "integration_bus", "console", "--config-dir", str(project),
               "--port", "0"]
    env = {k: v for k, v in os.environ.items() if k != "BUS_CONSOLE_SECRET"}
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stderr is not None
            line = ""
            while "console on http://" not in line:
                line = process.stderr.readline()
                assert line, "the console exited before it listened"
            url = line.split("console on ")[1].split(" ;")[0].rstrip("/")
            # Then it answers the login page, with a CSRF field and our headers
            page = httpx.get(f"{url}/login", timeout=10)
            assert page.status_code == 200 and 'name="csrf"' in page.text
            assert page.headers["x-frame-options"] == "DENY"
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
    # And the session secret it made is kept in the store for the next start
    with Bus.from_config_dir(project, environ={}) as bus:
        secret = bus.store.cursor_get("console:session-secret")
    assert secret is not None and len(secret) >= 32


@pytest.mark.postgres
def test_on_postgresql_logins_roles_and_a_group_replay_work_and_the_audit_verifies(
        tmp_path: Path, postgres_url: str) -> None:
    config_dir = build(tmp_path, postgres_url)
    set_mapping(tmp_path, FIXED)
    with Bus.from_config_dir(config_dir, environ={}) as bus, \
            TestClient(make_app(bus, secret=SECRET)) as client:
        login(client, "viewer")
        group = group_of(client, "2 pcs")
        token = csrf(client, "/")
        assert client.post("/dead-letters/replay",
                           data={"group": group, "csrf": token}).status_code == 403
        client.post("/logout", data={"csrf": token})
        login(client, "operator")
        answer = client.post("/dead-letters/replay",
                             data={"group": group, "csrf": csrf(client, "/")})
        assert "queued 2 replay(s)" in answer.text
        with Bus.from_config_dir(config_dir, environ={}) as runner, \
                running(lambda stop: runner.run(stop, sources=[])):
            wait_for(lambda: len(effects(tmp_path)) == 2, message="2 deliveries")
        check = client.get("/audit")
        assert check.status_code == 200 and "intact" in check.text
        assert "replay" in check.text and "denied" in check.text
    verified(config_dir)


def test_trace_and_export_show_masked_data_and_the_export_is_audited(
        client: TestClient, bus: Bus, project: Path) -> None:
    login(client, "viewer")
    letter = next(r for r in bus.store.dead_letters()
                  if r["envelope"]["payload"]["order_id"] == "W-00001")
    trace = client.get("/trace", params={"id": letter["envelope_id"]})
    assert trace.status_code == 200 and "dead_lettered" in trace.text and "received" in trace.text
    assert f'href="/dead-letters/{letter["id"]}"' in trace.text
    assert "customer1@" not in trace.text
    exported = client.get("/dead-letters/export", params={"route": "orders"})
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    rows = [json.loads(line) for line in exported.text.splitlines()]
    assert len(rows) == 4 and "customer1@" not in exported.text
    assert {r["envelope"]["payload"]["order_id"] for r in rows} >= {"W-00001", "W-00002"}
    exports = [(r["actor"], r["count"]) for r in audit_rows(project) if r["action"] == "export"]
    assert exports == [("viewer", 4)]


def test_a_replay_can_be_sent_to_another_route(client: TestClient, bus: Bus,
                                               project: Path) -> None:
    login(client, "operator")
    group = group_of(client, "2 pcs")
    preview = client.get("/dead-letters/preview", params={"group": group, "to_route": "nowhere"})
    assert preview.status_code == 200 and "is not in the configuration" in preview.text
    token = csrf(client, "/")
    refused = client.post("/dead-letters/replay", data={
        "group": group, "to_route": "nowhere", "csrf": token})
    assert refused.status_code == 400 and "no route named" in refused.text
    assert set(statuses(bus).values()) == {"new"}
    answer = client.post("/dead-letters/replay", data={
        "group": group, "to_route": "orders", "csrf": token})
    assert answer.status_code == 200 and "queued 2 replay(s) to route orders" in answer.text
    replays = [r for r in audit_rows(project) if r["action"] == "replay"]
    assert len(replays) == 1 and json.loads(str(replays[0]["detail"]))["to_route"] == "orders"


def test_the_console_templates_and_static_files_ship_in_the_distribution() -> None:
    # an editable install reads them from the tree; a wheel has only what package_data names
    root = Path(__file__).resolve().parents[1]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    patterns = cfg["options.package_data"]["integration_bus.web.console"].replace(",", " ")
    package = root / "integration_bus" / "web" / "console"
    files = [p.relative_to(package).as_posix() for p in package.rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns.split())
                         for f in files), files
