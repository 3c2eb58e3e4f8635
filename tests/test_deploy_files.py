"""The deploy files: the Dockerfile, deploy/compose.yaml, deploy/systemd/, the env example, the
alert rules and the dashboard — read and checked, and the compose roles run as local processes.

Docker is not needed: what compose would start (every bus service's command with its
environment) is started here as processes against the real RabbitMQ (a fresh vhost) and
PostgreSQL (a private database), in compose's order: the migration first, then the long-running
roles, which must come up and stop with exit 0 on SIGTERM.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from ruamel.yaml import YAML

from integration_bus.cli import cli
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BUS = str(Path(sys.executable).with_name("bus"))
#: roles with no HTTP endpoint to check (each says why in compose.yaml)
NO_HEALTHCHECK = {"bus-migrate", "scheduler"}
#: metrics the alerts and dashboard may use before the code has them (none now: every name must
#: be in integration_bus/ or connectors/)
ANNOUNCED: set[str] = set()


def _compose() -> dict[str, Any]:
    yaml = YAML(typ="safe")  # compose files use anchors and merge keys, which this reader expands
    data: dict[str, Any] = yaml.load((DEPLOY / "compose.yaml").read_text())
    return data


def _bus_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items()
            if str(svc.get("image", "")).startswith("integration-bus:")}


def check_bus_command(argv: list[str]) -> None:
    """Parse ``bus ARGV`` with the installed CLI's own parser (click), without running it:
    an unknown command or option, or a missing argument, raises click's UsageError."""
    ctx = click.Context(cli, info_name="bus")
    command: click.Command = cli
    args = list(argv)
    while isinstance(command, click.Group):
        assert args and not args[0].startswith("-"), f"bus {' '.join(argv)}: no command"
        sub = command.get_command(ctx, args[0])
        if sub is None:
            raise click.UsageError(f"bus {' '.join(argv)}: no command {args[0]!r}")
        ctx = click.Context(sub, info_name=args[0], parent=ctx)
        command, args = sub, args[1:]
    leaf = command.make_context(ctx.info_name, args, parent=ctx.parent)
    assert not leaf.args, f"bus {' '.join(argv)}: unexpected arguments {leaf.args}"


# -- the files ---------------------------------------------------------------------------------
def test_the_image_is_slim_runs_as_a_user_and_its_entrypoint_is_bus() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text.rsplit("\nFROM ", 1)[1]  # the last stage is the image
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    uid = re.search(r"useradd .*--uid (\d+)", final)
    assert uid and int(uid.group(1)) >= 1000
    assert re.search(r'^ENTRYPOINT \["bus"\]', final, re.M)
    assert "slim" in re.search(r"^ARG BASE=(\S+)", text, re.M).group(1)  # type: ignore[union-attr]
    compose = _compose()
    for name, svc in _bus_services(compose).items():
        assert svc["user"].split(":")[0] == uid.group(1), name


def test_every_bus_service_uses_one_image_and_a_real_bus_command() -> None:
    compose = _compose()
    services = _bus_services(compose)
    assert {"bus-migrate", "worker", "sources", "console", "scheduler"} <= set(services)
    assert {"rabbitmq", "postgres"} <= set(compose["services"])
    assert len({svc["image"] for svc in services.values()}) == 1
    assert len({json.dumps(svc["build"], sort_keys=True) for svc in services.values()}) == 1
    for name, svc in services.items():
        check_bus_command(svc["command"])
        if name != "bus-migrate":
            assert svc["depends_on"]["bus-migrate"]["condition"] == \
                "service_completed_successfully", name
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
    assert services["bus-migrate"]["command"] == ["db", "upgrade"]


def test_long_running_services_have_healthchecks_on_their_own_port() -> None:
    compose = _compose()
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck", {})
        if name in NO_HEALTHCHECK:
            assert check == {"disable": True}, name
            continue
        assert check.get("test"), f"{name} has no healthcheck"
        command = svc.get("command", [])
        if "--metrics-port" in command:
            port = command[command.index("--metrics-port") + 1]
            assert f"127.0.0.1:{port}/" in " ".join(check["test"]), name
        elif command[:1] == ["console"]:
            port = command[command.index("--port") + 1]
            assert f"127.0.0.1:{port}/health" in " ".join(check["test"]), name


def test_a_typo_in_a_command_is_caught() -> None:
    with pytest.raises(click.UsageError):
        check_bus_command(["worker", "--metrics-prot", "9400"])
    with pytest.raises(click.UsageError):
        check_bus_command(["wroker"])
    with pytest.raises(click.UsageError):
        check_bus_command(["db", "downgrade"])  # REV missing


def _units() -> dict[str, configparser.ConfigParser]:
    units = {}
    for path in sorted((DEPLOY / "systemd").iterdir()):
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(path.read_text())
        units[path.name] = parser
    return units


def test_systemd_units_run_real_bus_commands_as_the_bus_user() -> None:
    units = _units()
    assert {"bus-migrate.service", "bus-worker@.service", "bus-sources.service",
            "bus-scheduler.service", "bus-console.service", "bus.target"} <= set(units)
    services = {n: u for n, u in units.items() if n.endswith(".service")}
    for name, unit in services.items():
        service = unit["Service"]
        argv = shlex.split(service["ExecStart"].replace("%i", "9401"))
        assert argv[0] == "/opt/integration-bus/bin/bus", name
        check_bus_command(argv[1:])
        assert service["User"] == "bus" and service["NoNewPrivileges"] == "yes", name
        assert service["EnvironmentFile"] == "/etc/integration-bus/bus.env", name
        if name != "bus-migrate.service":
            assert "bus-migrate.service" in unit["Unit"]["Requires"], name
    assert services["bus-migrate.service"]["Service"]["Type"] == "oneshot"


def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for path in (DEPLOY / "systemd").iterdir():
        target = tmp_path / (path.name.replace("@.", "@9401.") if "@." in path.name
                             else path.name)
        # the units name the installed bus; point them at this venv's for the check
        target.write_text(path.read_text().replace("/opt/integration-bus/bin/bus", BUS))
    result = subprocess.run([analyze, "verify", *map(str, sorted(tmp_path.iterdir()))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_env_example_names_every_variable_the_reference_config_uses() -> None:
    example = (DEPLOY / "bus.env.example").read_text()
    named = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.M))
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", (ROOT / "config" / "bus.yaml").read_text()))
    used.discard("ENV")  # the comment explaining the syntax
    assert used - named == set()
    assert {"BUS_BROKER_URL", "BUS_STORE_URL", "RABBITMQ_DEFAULT_PASS", "POSTGRES_PASSWORD"} \
        <= set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, re.M))


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b((?:bus|pos_file)_[a-z_]+)", expr))
    return {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in names}


def _code_text() -> str:
    return "\n".join(p.read_text() for top in ("integration_bus", "connectors")
                     for p in (ROOT / top).rglob("*.py"))


def test_alert_rules_are_valid_and_name_real_metrics() -> None:
    rules_file = DEPLOY / "prometheus" / "alerts.yaml"
    promtool = shutil.which("promtool")
    if promtool:
        result = subprocess.run([promtool, "check", "rules", str(rules_file)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    groups = YAML(typ="safe").load(rules_file.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len({r["alert"] for r in rules}) == len(rules)
    code = _code_text()
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        for name in _metric_names(rule["expr"]):
            assert name in ANNOUNCED or f'"{name}"' in code, (rule["alert"], name)
    wanted = ("order_age", "bus_orders_final", "stock_mismatches", "files_late",
              "expected_file_missing", "queue_depth", "dead_letters")
    exprs = " ".join(r["expr"] for r in rules)
    assert all(w in exprs for w in wanted)


def test_the_dashboard_shows_what_the_alerts_watch() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "integration-bus.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    shown = set().union(*(_metric_names(t["expr"]) for p in panels for t in p["targets"]))
    rules = YAML(typ="safe").load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    alerted = set().union(*(_metric_names(r["expr"]) for g in rules["groups"]
                            for r in g["rules"]))
    assert alerted - shown - {"bus_reconcile_last_success_timestamp_seconds"} == set()


# -- the roles, as compose runs them -------------------------------------------------------------

def _moved_port(argv: list[str], port: int) -> list[str]:
    flag = "--metrics-port" if "--metrics-port" in argv else "--port"
    if flag not in argv:
        return list(argv)
    out = list(argv)
    out[out.index(flag) + 1] = str(port)
    return out


def _wait(condition: Any, what: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.2)  # polling interval while waiting on the condition
    raise AssertionError(f"timed out waiting for {what}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """What the image holds under /srv/bus: the reference project and var/pos/inbox."""
    for name in ("config", "mappings", "schemas"):
        shutil.copytree(ROOT / name, tmp_path / name)
    (tmp_path / "var" / "pos" / "inbox").mkdir(parents=True)
    yield tmp_path


@pytest.mark.rabbitmq
@pytest.mark.postgres
@pytest.mark.slow
def test_the_compose_roles_run_as_local_processes(project: Path, rabbitmq_url: str,
                                                   postgres_url: str) -> None:
    from connectors.soap_erp.fakeerp.scenario import seed_scenario
    from connectors.soap_erp.fakeerp.server import ErpServer
    from connectors.soap_erp.fakeerp.state import ErpState

    compose = _compose()
    services = _bus_services(compose)
    state = ErpState()
    seed_scenario(state)
    erp = ErpServer(state)
    erp.start()
    # Given compose's environment for the bus services, pointed at this machine's services
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "SHOP_", "ERP_"))}
    env.update({k: str(v) for k, v in services["worker"]["environment"].items()})
    env.update({"BUS_BROKER_URL": rabbitmq_url, "BUS_STORE_URL": postgres_url,
                "BUS_CONFIG_DIR": str(project / "config"), "ERP_URL": erp.url,
                "BUS_METRICS_HOST": "127.0.0.1", "BUS_WEBHOOK_HOST": "127.0.0.1",
                "BUS_WEBHOOK_PORT": str(free_port()),
                "BUS_AVAILABILITY_PORT": str(free_port())})
    with_endpoints = "--metrics-host" in subprocess.run(
        [BUS, "worker", "--help"], capture_output=True, text=True, env=env).stdout
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        # When the one-shot migration runs first...
        migrate = subprocess.run([BUS, *services["bus-migrate"]["command"]], cwd=project,
                                 env=env, capture_output=True, text=True, timeout=120)
        assert migrate.returncode == 0, migrate.stderr
        current = subprocess.run([BUS, "db", "current"], cwd=project, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert current.returncode == 0, current.stdout + current.stderr  # 0: at head
        # ...then every long-running role starts
        ports: dict[str, int] = {}
        for name, svc in services.items():
            if name == "bus-migrate":
                continue
            ports[name] = free_port()
            log = project / f"{name}.log"
            with log.open("wb") as out:
                procs[name] = (subprocess.Popen([BUS, *_moved_port(svc["command"], ports[name])],
                                                cwd=project, env=env, stdout=out,
                                                stderr=subprocess.STDOUT), log)
        # Then each comes up: its metrics answer (and its compose healthcheck passes, where
        # the process serves /ready), the scheduler names its jobs
        for name, svc in services.items():
            if name == "bus-migrate":
                continue
            proc, log = procs[name]
            if "--metrics-port" in svc["command"]:
                url = f"http://127.0.0.1:{ports[name]}/metrics"
                _wait(lambda url=url: _answers(url), f"{name}'s {url}")
                if with_endpoints:
                    test = [part.replace(":9400/", f":{ports[name]}/")
                            for part in svc["healthcheck"]["test"][1:]]
                    test[0] = sys.executable if test[0] == "python3" else test[0]
                    _wait(lambda test=test: subprocess.run(test, timeout=30).returncode == 0,
                          f"{name}'s healthcheck")
            elif svc["command"][:1] == ["console"]:
                test = [part.replace(":8089/", f":{ports[name]}/")
                        for part in svc["healthcheck"]["test"][1:]]
                test[0] = sys.executable if test[0] == "python3" else test[0]
                _wait(lambda test=test: subprocess.run(test, timeout=30).returncode == 0,
                      f"{name}'s healthcheck")
            else:
                _wait(lambda log=log: "scheduler running" in log.read_text(errors="replace"),
                      f"{name} to start")
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        # And every role stops on SIGTERM with exit 0, as `docker stop` asks it to
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, (proc, log) in procs.items():
            code = proc.wait(timeout=90)
            assert code == 0, (name, code, log.read_text(errors="replace")[-3000:])
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        erp.stop()


def test_the_prometheus_config_in_the_deploy_guide_is_valid(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt install prometheus)")
    guide = (ROOT / "docs" / "deploy.md").read_text()
    excerpt = re.search(r"```yaml\n(# prometheus.yml.*?)```", guide, re.S)
    assert excerpt, "docs/deploy.md has no prometheus.yml excerpt"
    config = tmp_path / "prometheus.yml"
    config.write_text(excerpt.group(1).replace("/etc/prometheus/integration-bus/alerts.yaml",
                                               str(DEPLOY / "prometheus" / "alerts.yaml")))
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
