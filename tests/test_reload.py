"""Hot reload: a running bus picks up an edited mapping; a broken edit is refused."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from integration_bus.envelope import Envelope
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from tests.conftest import write_config
from tests.support.probe import Target, probe_plugin, registry_with, running, wait_for

MAPPING = """
name: greet
input: {{type: order.created}}
output: {{type: order.greeted}}
steps:
  - map:
      order_id: "order_id"
      greeting: "{greeting}"
"""


def write_mapping(root: Path, body: str) -> None:
    folder = root / "mappings"
    folder.mkdir(exist_ok=True)
    path = folder / "greet.yaml"
    path.write_text(textwrap.dedent(body).lstrip())
    # make the change visible even within one mtime tick
    stamp = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def test_edited_mapping_applies_to_next_messages_and_broken_edit_is_refused(
        tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, """
        store: {url: sqlite:///var/bus.db}
        sinks: {probe: {connector: probe}}
        routes:
          orders: {from: [order.created], pipeline: greet, to: [probe]}
        """)
    write_mapping(tmp_path, MAPPING.format(greeting="'hello'"))
    target = Target()
    registry = registry_with(probe_plugin(target))
    with Bus(load_config(config_dir, registry, {}), registry=registry) as bus:
        reloader = bus.reloader()
        assert reloader is not None
        reloader.interval = 0.05
        publisher = bus.publisher()

        def send(n: int) -> Envelope:
            envelope = Envelope.create("order.created", {"order_id": f"W-{n}"}, source="t")
            publisher.publish(envelope)
            return envelope

        with running(bus.worker().run), running(reloader.run):
            first = send(1)
            wait_for(lambda: target.count() == 1)
            # When the engineer edits the mapping while the bus runs
            write_mapping(tmp_path, MAPPING.format(greeting="'good morning'"))
            wait_for(lambda: reloader.reloads == 1, message="reload")
            second = send(2)
            wait_for(lambda: target.count() == 2)
            # And then saves a mapping that does not compile
            write_mapping(tmp_path, MAPPING.format(greeting="'oops' |"))
            wait_for(lambda: len(reloader.refusals) == 1, message="refusal")
            third = send(3)
            wait_for(lambda: target.count() == 3)
        publisher.close()
        greetings = [e.payload["greeting"] for e in target.envelopes]
        assert greetings == ["hello", "good morning", "good morning"]
        assert "greet.yaml:" in reloader.refusals[0]  # the error names the file and line
        versions = [bus.store.journal_for(e.id)[0]["mapping_version"]
                    for e in (first, second, third)]
        assert versions[0] != versions[1] and versions[1] == versions[2]
