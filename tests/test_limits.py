"""Hostile sizes and shapes the core must refuse with a typed error instead of crashing or
growing: YAML nested thousands deep, giant failure texts, wrong broker credentials."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors.pos_file.errors import LayoutError
from connectors.pos_file.layout_file import load_layout
from integration_bus.cli import cli
from integration_bus.errors import BrokerUnavailable, ConfigError
from integration_bus.store import DeadLetter, JournalEntry, Settlement, Store, utcnow
from integration_bus.store.records import (
    MAX_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    clip_text,
    traceback_text,
)
from integration_bus.store.schema import journal
from integration_bus.transport.amqp import AmqpTransport
from integration_bus.yamlsafe import MAX_DEPTH, read_yaml
from tests.conftest import write_config

DEEP = 5000


def _deep_yaml(style: str) -> str:
    if style == "flow":
        return "name: x\nrecords: " + "[" * DEEP + "]" * DEEP + "\n"
    if style == "block":  # "- - - - x": each dash opens a list
        return "name: x\nrecords:\n  " + "- " * DEEP + "x\n"
    return "name: x\nrecords: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n"


@pytest.mark.parametrize("style", ["flow", "block", "mapping"])
def test_yaml_nested_thousands_deep_is_a_config_error_at_its_line(tmp_path: Path,
                                                                    style: str) -> None:
    # Given a file nested 5,000 levels deep (a RecursionError in the composer before)
    path = tmp_path / "deep.yaml"
    path.write_text(_deep_yaml(style))
    # When it is read, Then a ConfigError names the file, the line and the limit
    with pytest.raises(ConfigError) as caught:
        read_yaml(path)
    error = caught.value
    assert error.context["file"] == str(path)
    assert error.context["line"] in (2, 3)
    assert f"deeper than {MAX_DEPTH}" in str(error)
    # And the POS layout loader, which reads YAML through the same reader, says the same
    with pytest.raises(LayoutError) as layout:
        load_layout(path, field="layout")
    assert f"deeper than {MAX_DEPTH}" in str(layout.value)
    assert layout.value.context["line"] in (2, 3)


def test_yaml_nesting_up_to_the_limit_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n")  # the root map is level 1
    with pytest.raises(ConfigError):
        read_yaml(path)
    path.write_text("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n")
    data, _ = read_yaml(path)
    depth, node = 0, data["a"]
    while node:
        depth, node = depth + 1, node[0]
    assert depth == MAX_DEPTH - 2  # the innermost list is empty


BROKER_CONFIG = """
broker: {{url: "{url}"}}
store: {{url: sqlite:///var/bus.db}}
sinks:
  out: {{connector: jsonl, path: var/out.jsonl}}
routes:
  orders: {{from: [order.*], to: [out]}}
"""


@pytest.mark.rabbitmq
def test_wrong_broker_credentials_are_one_clean_line(tmp_path: Path, rabbitmq_url: str) -> None:
    # Given a config whose broker URL carries a wrong password for the real RabbitMQ
    password = "Wrong-Secret-4711"
    url = rabbitmq_url.replace("guest:guest@", f"guest:{password}@")
    config_dir = write_config(tmp_path, BROKER_CONFIG.format(url=url))
    # When the transport connects, Then a typed error says the broker refused the login
    with pytest.raises(BrokerUnavailable) as caught:
        AmqpTransport(url, connect_timeout=5).connect()
    assert caught.value.context["reason"] == "access_refused"
    assert password not in str(caught.value)
    # And `bus worker` prints one line (no traceback, no password) and exits 2
    assert CliRunner().invoke(cli, ["db", "upgrade", "--config-dir", str(config_dir)]
                              ).exit_code == 0  # the store is ready: only the broker is wrong
    for command in ("worker", "send"):
        args = [command, "--config-dir", str(config_dir)]
        if command == "send":
            args += ["--type", "order.created", "-"]
        result = CliRunner().invoke(cli, args, input='{"id": 1}')
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, result.output
        assert len(lines) == 1 and lines[0].startswith("error: broker.url: "), result.output
        # (the user is named unless it is a known secret: guest's password is "guest" too)
        assert re.search(r"refused the login of user '(guest|\*\*\*)'", lines[0]), lines[0]
        assert password not in result.output and "Traceback" not in result.output


def test_clipped_text_says_how_much_was_left_out() -> None:
    text = "head " + "x" * 100_000 + " tail"
    clipped = clip_text(text, 1000)
    assert len(clipped) <= 1000 and clipped.startswith("head ")
    assert "(truncated, 100,010 characters, " in clipped
    left_out = int(clipped.split(" characters, ")[1].split(" left out")[0].replace(",", ""))
    kept = clipped.split(" … (truncated")[0]
    assert len(kept) + left_out == len(text)  # the marker's figure is exact
    both = clip_text(text, 1000, keep_tail=True)
    assert both.startswith("head ") and both.endswith(" tail") and len(both) <= 1000
    assert clip_text("short", 1000) == "short"


def test_a_huge_error_keeps_its_frames_and_is_stored_small(tmp_path: Path) -> None:
    # Given an error whose message is 9 MB (a partner's fault text), raised a few frames deep
    def deep(n: int) -> None:
        if n == 0:
            raise RuntimeError("fault: " + "y" * (9 << 20))
        deep(n - 1)

    try:
        deep(3)
    except RuntimeError as exc:
        error = exc
    text = traceback_text(error)
    assert len(text) <= MAX_TRACEBACK_CHARS and text.count("in deep") == 4
    assert text.startswith("Traceback") and "truncated" in text
    # When rows are written that were not clipped by their builder (the store's last net)
    store = Store.open(f"sqlite:///{tmp_path / 'bus.db'}")
    try:
        now = utcnow()
        huge = "z" * (9 << 20)
        store.settle(Settlement(
            journal=[JournalEntry("E1", "rejected", now, detail={"message": huge,
                                                                 "nested": [{"x": huge}]})],
            dead=[DeadLetter(id="D1", envelope={"id": "E1"}, route="r", reason="rejected",
                             error_type="X", message=huge, failed_at=now, traceback=huge,
                             attempts=[{"attempt": 0, "at": now.isoformat(),
                                        "message": huge}])]))
        (letter,) = store.dead_letters()
        with store.db.begin() as conn:
            (row,) = conn.execute(journal.select()).mappings().all()
    finally:
        store.close()
    # Then every stored text is bounded and marked
    assert len(letter["message"]) <= 2 * MAX_MESSAGE_CHARS
    assert len(letter["traceback"]) <= 2 * MAX_TRACEBACK_CHARS
    assert len(letter["attempts"][0]["message"]) <= 2 * MAX_MESSAGE_CHARS
    assert len(row["detail"]["message"]) <= 2 * MAX_MESSAGE_CHARS
    assert len(row["detail"]["nested"][0]["x"]) <= 2 * MAX_MESSAGE_CHARS
    assert f"(truncated, {9 << 20:,} characters" in letter["message"]
