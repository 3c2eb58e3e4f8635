"""Ingress isolation for files (fault suite): a record whose envelope cannot travel (bigger than
``broker.max_message``) is dead-lettered on its own with the reason and file:line; the rest of
its window is published and the file is archived — no record earns a retry forever."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.pos_file.lane import daily_file_bytes
from connectors.pos_file.layout_file import load_layout
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from tests.pos_file.support import (
    DAILY,
    PosBus,
    drop,
    files_in,
    pos_plugin,
    source_yaml,
    write_bus_config,
)
from tests.support.probe import Target, probe_plugin, registry_with, wait_for

pytestmark = [pytest.mark.rabbitmq, pytest.mark.faults]
NAME = "SALES_0042_20240301.DAT"


def _wide_layout(root: Path) -> Path:
    """The daily layout plus an optional 2,000-character note at the end of each sale line."""
    text = DAILY.read_text().replace(
        "         pad: \"0\", publish: false}\n  trailer:",
        "         pad: \"0\", publish: false}\n"
        "      - {name: note, start: 121, length: 2000, required: false}\n  trailer:")
    assert "name: note" in text
    path = root / "wide_sales.yaml"
    path.write_text(text)
    return path


def test_a_record_too_big_to_publish_is_dead_lettered_alone(tmp_path: Path,
                                                            rabbitmq_url: str) -> None:
    layout = _wide_layout(tmp_path)
    (tmp_path / "inbox").mkdir()
    config_dir = write_bus_config(tmp_path, rabbitmq_url,
                                  sources=source_yaml(extra=f"layout: {layout}"))
    bus_yaml = config_dir / "bus.yaml"
    bus_yaml.write_text(bus_yaml.read_text().replace("batch_size: 100}",
                                                     "batch_size: 100, max_message: 2048}"))
    target = Target()
    registry = registry_with(pos_plugin, probe_plugin(target))
    pos = PosBus(root=tmp_path, target=target, registry=registry,
                 bus=Bus(load_config(config_dir, registry, {}), registry=registry).open())
    try:
        # Given a 200-line file whose line 57 carries a 2,000-character note (an envelope
        # over the 2,048-byte message limit), in the middle of a publish window
        data = daily_file_bytes(load_layout(layout), store="0042", records=200)
        lines = data.split(b"\r\n")
        lines[56] = lines[56][:120] + b"N" * 2000
        drop(pos.inbox(), NAME, b"\r\n".join(lines))
        # When the source and a worker run
        with pos.running_worker(), pos.running_source(pos.source()):
            wait_for(lambda: files_in(pos.work() / "archive") == [NAME], timeout=60,
                     message="archived")
            wait_for(lambda: target.count() == 199, message="199 deliveries")
        # Then the other 199 were delivered and the big one is one dead letter with its place
        lines_seen = sorted(e.headers["source_ref"]["line"] for e in target.envelopes)
        assert lines_seen == [n for n in range(2, 202) if n != 57]
        (letter,) = pos.bus.store.dead_letters()
        assert letter["error_type"] == "UnpublishableError"
        assert "over the 2,048-byte message limit" in letter["message"]
        assert letter["source_ref"]["line"] == 57 and letter["source_ref"]["file"] == NAME
    finally:
        pos.close()
