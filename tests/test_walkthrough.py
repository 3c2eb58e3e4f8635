"""The README's multi-process walkthrough on RabbitMQ, run as written.

The lines are read from README.md between ``<!-- ci:walkthrough -->`` and the end of its code
block, so the README cannot drift from what works. Each line runs as the shell would run it:
``export`` sets the environment, ``CMD &`` starts a background job, ``kill %N`` sends SIGTERM to
job N, anything else runs in the foreground and must exit 0; every background job must exit 0
on its SIGTERM. Three things differ from a person typing, and only these: the broker URL points
at a fresh vhost, the fixed ports (8087-8090, 9400) are moved to free ones (the config's defaults
through the same environment variables an operator would set), and before an inspecting command
(``bus status``, ``bus dlq``) the test waits until the bus has settled, as a person would look
again until the queues are empty. The counts the README promises in its ``bus status`` comment
("web_orders 5 delivered; ...") and in the ``bus dlq groups`` comment are then checked against
``bus status --json``, ``bus dlq groups --json`` and the fake ERP's own tally.
"""

from __future__ import annotations

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
BUS = str(Path(sys.executable).with_name("bus"))
MARKER = "<!-- ci:walkthrough -->"
README_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
#: the fixed ports of the walkthrough and the config defaults that name them
PORT_ENV = {8087: "BUS_AVAILABILITY_PORT", 8088: "BUS_WEBHOOK_PORT"}
PORT_URL_ENV = {8089: ("SHOP_URL", "http://127.0.0.1:{}"),
                8090: ("ERP_URL", "http://127.0.0.1:{}/erp")}
FIXED_PORTS = (8087, 8088, 8089, 8090, 9400)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


@dataclass
class Line:
    argv: list[str]
    background: bool
    comment: str


def walkthrough_lines(readme: str) -> list[Line]:
    """The shell lines of the walkthrough block (comments kept apart)."""
    after = readme.split(MARKER, 1)[1]
    block = re.search(r"```sh\n(.*?)```", after, re.S)
    assert block, f"README.md: no ```sh block after {MARKER}"
    lines = []
    for raw in block.group(1).splitlines():
        if not raw.strip():
            continue
        lexer = shlex.shlex(raw, posix=True, punctuation_chars="&")
        lexer.whitespace_split = True
        lexer.commenters = ""
        tokens = []
        comment = ""
        for token in lexer:
            if token.startswith("#"):
                comment = raw[raw.index("  #"):].strip().lstrip("#").strip() \
                    if "  #" in raw else token
                break
            tokens.append(token)
        background = tokens[-1:] == ["&"]
        lines.append(Line(tokens[:-1] if background else tokens, background, comment))
    return lines


def test_the_walkthrough_block_parses_into_commands() -> None:
    lines = walkthrough_lines((ROOT / "README.md").read_text())
    assert lines[0].argv[0] == "export"
    assert any(line.background and line.argv[1:2] == ["worker"] for line in lines)
    assert any(line.argv[:2] == ["kill", "%1"] for line in lines)
    assert all("#" not in " ".join(line.argv) for line in lines)



def _moved(token: str, ports: dict[int, int]) -> str:
    for old, new in ports.items():
        token = re.sub(rf"(?<![\d]){old}(?![\d])", str(new), token)
    return token


@dataclass
class Shell:
    """What the person's shell holds: the environment, the jobs, their output files."""

    cwd: Path
    env: dict[str, str]
    ports: dict[int, int]
    jobs: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def argv(self, line: Line) -> list[str]:
        argv = [_moved(t, self.ports) for t in line.argv]
        if argv[0] == ".venv/bin/bus":
            argv[0] = BUS
        return argv

    def run(self, line: Line) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(line), cwd=self.cwd, env=self.env, text=True,
                                capture_output=True, timeout=180)
        assert result.returncode == 0, (line.argv, result.stdout, result.stderr)
        return result

    def start(self, line: Line) -> None:
        log = self.cwd / f"job{len(self.jobs) + 1}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(self.argv(line), cwd=self.cwd, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT)
        self.jobs.append((proc, log))

    def stop(self, number: int) -> str:
        proc, log = self.jobs[number - 1]
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        output = log.read_text(errors="replace")
        assert code == 0, (proc.args, code, output[-3000:])
        return output

    def kill_all(self) -> None:
        for proc, _ in self.jobs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    def bus_json(self, *args: str) -> Any:
        out = subprocess.run([BUS, *args, "--json"], cwd=self.cwd, env=self.env, text=True,
                             capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


def _settled(routes: list[dict[str, Any]], orders: int) -> bool:
    by_name = {r["route"]: r for r in routes}
    return (by_name["web_orders"]["received"] >= orders
            and all(r["queued"] == 0 and r["in_retry"] == 0 for r in routes)
            and all(r["received"] == r["delivered"] + r["filtered"] + r["dead_lettered"]
                    for r in routes))


def _wait_settled(shell: Shell, orders: int, deadline: float = 90.0) -> list[dict[str, Any]]:
    end = time.monotonic() + deadline
    routes: list[dict[str, Any]] = []
    while time.monotonic() < end:
        routes = shell.bus_json("status")["routes"]
        if _settled(routes, orders):
            return routes
        time.sleep(0.5)  # polling interval while waiting on the condition, not a timed wait
    raise AssertionError(f"the bus did not settle within {deadline}s: {routes}")


def _promised_counts(comment: str) -> dict[str, dict[str, int]]:
    """'web_orders 5 delivered; order_availability 6 received, 1 dead letter' ->
    {'web_orders': {'delivered': 5}, 'order_availability': {'received': 6, 'dead_lettered': 1}}"""
    promised: dict[str, dict[str, int]] = {}
    for part in comment.split(":", 1)[-1].split(";"):
        route, _, rest = part.strip().partition(" ")
        for number, what in re.findall(r"(\d+) (received|delivered|dead letters?)", rest):
            promised.setdefault(route, {})["dead_lettered" if what.startswith("dead")
                                           else what] = int(number)
    return promised


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A fresh checkout's data: config, mappings, schemas; no var/."""
    for name in ("config", "mappings", "schemas"):
        shutil.copytree(ROOT / name, tmp_path / name)
    yield tmp_path


def test_the_readme_walkthrough_runs_as_written(project: Path, rabbitmq_url: str) -> None:
    lines = walkthrough_lines((ROOT / "README.md").read_text())
    ports = {port: free_port() for port in FIXED_PORTS}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "SHOP_", "ERP_"))}
    env.update({name: str(ports[port]) for port, name in PORT_ENV.items()})
    env.update({name: url.format(ports[port]) for port, (name, url) in PORT_URL_ENV.items()})
    shell = Shell(project, env, ports)
    orders = next(int(line.argv[line.argv.index("--orders") + 1]) for line in lines
                  if "--webhook" in line.argv)
    promised: dict[str, dict[str, int]] = {}
    dead_letter_groups: list[tuple[str, int]] = []
    outputs: dict[int, str] = {}
    try:
        for line in lines:
            # Given the shell the README starts from, when each line runs as written...
            if line.argv[0] == "export":
                for assignment in line.argv[1:]:
                    name, _, value = assignment.partition("=")
                    if value.startswith(README_BROKER):
                        value = rabbitmq_url  # the fresh vhost instead of the default one
                    env[name] = value
            elif line.argv[0] == "kill":
                for job in line.argv[1:]:
                    outputs[int(job.lstrip("%"))] = shell.stop(int(job.lstrip("%")))
            elif line.background:
                shell.start(line)
            else:
                inspecting = line.argv[1:2] in (["status"], ["dlq"])
                if inspecting:
                    _wait_settled(shell, orders)
                shell.run(line)
                if line.argv[1:2] == ["status"]:
                    promised = _promised_counts(line.comment)
                if line.argv[1:3] == ["dlq", "groups"]:
                    dead_letter_groups = re.findall(r"(\w+), (\d+)", line.comment)
    finally:
        shell.kill_all()

    # ...then every command exited 0 (checked as each ran) and the counts are what it promised.
    assert promised and dead_letter_groups, "the README's status/dlq comments name no counts"
    assert len(shell.jobs) == len(outputs), "the walkthrough leaves a job running"
    # (the store outlives the processes: read it after they stopped)
    routes = {r["route"]: r for r in shell.bus_json("status")["routes"]}
    for route, counts in promised.items():
        for what, number in counts.items():
            assert routes[route][what] == number, (route, what, routes[route])
    groups = shell.bus_json("dlq", "groups")
    found = sorted((g["error_type"], g["count"]) for g in groups)
    assert found == sorted((error, int(n)) for error, n in dead_letter_groups)
    erp = next(out for out in outputs.values() if "documents:" in out)
    assert f"'sales_order': {orders}" in erp and f"'reservation': {orders}" in erp, erp
    assert "duplicates refused: 0" in erp
