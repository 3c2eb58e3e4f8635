"""The plugin inside a running bus (embedded mode), with the test kit's ``running_bus`` fixture:
files dropped in the inbox come out as files of the sink; ``join()`` re-raises the error of a
message that was dead-lettered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from integration_bus.connector import PermanentError
from integration_bus.testing import StartBus, wait_for

CONFIG = """
store: {url: "sqlite:///var/bus.db"}
sources:
  drops: {connector: example_files, folder: inbox, type: order.created, poll_interval: 50ms}
sinks:
  files: {connector: example_files, folder: out}
routes:
  orders: {from: [order.created], to: [files]}
"""


def drop(inbox: Path, name: str, payload: object) -> None:
    inbox.mkdir(exist_ok=True)
    (inbox / f"{name}.tmp").write_text(json.dumps(payload))
    (inbox / f"{name}.tmp").rename(inbox / f"{name}.json")


def test_dropped_files_come_out_as_files(running_bus: StartBus, tmp_path: Path) -> None:
    # Given a running bus whose source and sink are this plugin's
    running = running_bus(CONFIG)
    # When three orders are dropped in the inbox and taken in
    for n in range(3):
        drop(tmp_path / "inbox", f"order-{n}", {"order": n})
    wait_for(lambda: len(list((tmp_path / "inbox" / "done").glob("*.json"))) == 3,
             message="three files taken in")
    running.join()
    # Then the sink wrote one file per order
    written = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert sorted(w["payload"]["order"] for w in written) == [0, 1, 2]


def test_join_re_raises_why_a_message_was_dead_lettered(running_bus: StartBus,
                                                        tmp_path: Path) -> None:
    running = running_bus(CONFIG)
    drop(tmp_path / "inbox", "not-an-object", ["a", "list"])
    wait_for(lambda: (tmp_path / "inbox" / "done" / "not-an-object.json").exists(),
             message="the file taken in")
    with pytest.raises(PermanentError, match="not a JSON object"):
        running.join()


def test_a_file_no_route_takes_is_dead_lettered_not_retried_forever(
        running_bus: StartBus, tmp_path: Path) -> None:
    # Given a source whose type no route takes
    running = running_bus(CONFIG.replace("type: order.created", "type: order.cancelled"))
    # When a file is dropped in the inbox
    drop(tmp_path / "inbox", "stray", {"order": 9})
    # Then it goes to rejected/, and its dead letter says which file it was
    wait_for(lambda: (tmp_path / "inbox" / "rejected" / "stray.json").exists(),
             message="the file rejected")
    (letter,) = running.bus.store.dead_letters()
    assert letter["error_type"] == "UnroutableError"
    assert letter["source_ref"] == {"file": "stray.json"}
