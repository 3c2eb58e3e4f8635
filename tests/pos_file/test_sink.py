"""The pos_file sink: layout-rendered files for the POS, written under a temp name and renamed
into place (a till never sees half a file), per-store folders, done files, safe templates."""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.pos_file import PosFileSink, PosFileSinkConfig
from connectors.pos_file import plugin as pos_plugin
from connectors.pos_file.layout_file import load_layout
from connectors.pos_file.parser import Record, parse_bytes
from integration_bus.connector import ConfigError, Envelope, PermanentError
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from tests.pos_file.support import DAILY, LAYOUTS, files_in
from tests.support.probe import registry_with, running, wait_for

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100
PRICES = LAYOUTS / "price_download.yaml"


class FolderEvents:
    """inotify on a folder: (event mask, name) pairs, to see how files appear in it."""

    def __init__(self, folder: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        assert self._libc.inotify_add_watch(self._fd, os.fsencode(folder), mask) >= 0

    def read(self) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        try:
            data = os.read(self._fd, 1 << 16)
        except BlockingIOError:
            return out
        offset = 0
        while offset < len(data):
            _, mask, _, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
            out.append((mask, name))
            offset += 16 + length
        return out

    def close(self) -> None:
        os.close(self._fd)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "bus.yaml").write_text(f"""
store: {{url: sqlite:///var/bus.db}}
sinks:
  prices:
    connector: pos_file
    layout: {PRICES}
    folder: outbox/{{store}}
    file_name: "PRICES_{{store}}_{{key}}.CSV"
    done_suffix: .done
routes:
  prices: {{from: [pos.price_batch], to: [prices]}}
""")
    registry = registry_with(pos_plugin)
    opened = Bus(load_config(tmp_path / "config", registry, {}), registry=registry).open()
    try:
        yield opened
    finally:
        opened.close()


def batch(store: str = "0042", **extra: Any) -> Envelope:
    return Envelope.create("pos.price_batch", {
        "store": store, "records": [
            {"sku": "A;1", "description": 'Pen "blue"', "price": "1.50", "currency": "EUR",
             "valid_from": "2026-01-01"},
            {"sku": "B2", "description": None, "price": "1234.00", "currency": "EUR",
             "valid_from": "2026-01-02", "not_in_layout": "left out"}], **extra},
        source="test", idempotency_key=f"prices-{store}-1")


def test_a_batch_becomes_one_file_renamed_into_place_then_a_done_file(bus: Bus,
                                                                     tmp_path: Path) -> None:
    sink = bus.sink("prices")
    folder = tmp_path / "outbox" / "0042"
    folder.mkdir(parents=True)
    events = FolderEvents(folder)
    envelope = batch()
    try:
        sink.deliver(envelope)
        seen = events.read()
    finally:
        events.close()
    (name,) = files_in(folder, "PRICES_*.CSV")
    assert files_in(folder) == sorted([name, name + ".done"])  # no temp file left behind
    # the file under its final name only ever appeared by rename: never created, never written
    assert [mask for mask, n in seen if n == name] == [IN_MOVED_TO]
    names = [n for _, n in seen if n]
    assert names.index(name) < names.index(name + ".done")
    records = parse_bytes(load_layout(PRICES), (folder / name).read_bytes())
    assert records == [
        Record("price", {"sku": "A;1", "description": 'Pen "blue"', "price": Decimal("1.50"),
                         "currency": "EUR", "valid_from": date(2026, 1, 1)}),
        Record("price", {"sku": "B2", "description": None, "price": Decimal("1234.00"),
                         "currency": "EUR", "valid_from": date(2026, 1, 2)})]
    assert sink.lookup(envelope)  # type: ignore[attr-defined]
    assert not sink.lookup(batch("0107"))  # type: ignore[attr-defined]


def test_header_and_trailer_control_totals_are_written_for_a_daily_layout(
        bus: Bus, tmp_path: Path) -> None:
    sink = PosFileSink(PosFileSinkConfig(layout=str(DAILY), folder="out", file_name="D_{key}"),
                       bus.context("daily"))
    line = {"lane": "001", "receipt": "9", "line": "1", "ts": "20240301 101010", "item": "X",
            "qty": "-2", "unit_price": "1.25", "tender": "CASH", "void": "N", "amount": "-2.50"}
    sink.deliver(Envelope.create("pos.export", {
        "header": {"store": "0042", "business_date": "2024-03-01", "file_seq": 1,
                   "created": "x"},
        "records": [line, {**line, "qty": "3", "amount": "3.75"}]}, source="t"))
    (name,) = files_in(tmp_path / "out")
    records = parse_bytes(load_layout(DAILY), (tmp_path / "out" / name).read_bytes())
    assert records[-1] == Record("trailer", {"record_count": 2,
                                             "amount_total": Decimal("1.25")})


@pytest.mark.parametrize(("envelope", "words"), [
    (batch("../../etc"), "not a plain name"),
    (batch("0042", records=[{"sku": "A", "price": 1.5, "currency": "EUR",
                             "valid_from": "2026-01-01"}]), "not a valid decimal"),
    (batch("0042", records=[{"sku": "A", "price": "1.505", "currency": "EUR",
                             "valid_from": "2026-01-01"}]), "more than 2 decimal places"),
    (batch("0042", records=[{"sku": "A\nB", "price": "1", "currency": "EUR",
                             "valid_from": "2026-01-01"}]), "control character"),
    (batch("0042", header={"store": "0042"}), "has no header record"),
])
def test_bad_deliveries_are_permanent_errors_and_write_nothing(bus: Bus, tmp_path: Path,
                                                               envelope: Envelope,
                                                               words: str) -> None:
    with pytest.raises(PermanentError, match=words):
        bus.sink("prices").deliver(envelope)
    assert not (tmp_path / "outbox").exists() or not any((tmp_path / "outbox").rglob("*.*"))
    assert not (tmp_path.parent / "etc").exists()


@pytest.mark.parametrize(("change", "words"), [
    ({"record": "nope"}, "not a detail record"),
    ({"file_name": "{store:>8}.CSV"}, "formats are not supported"),
    ({"file_name": "../{store}.CSV"}, "cannot hold '/'"),
])
def test_sink_config_mistakes_fail_at_construction(bus: Bus, change: dict[str, str],
                                                   words: str) -> None:
    config = PosFileSinkConfig(**{"layout": str(PRICES), "folder": "out", **change})
    with pytest.raises(ConfigError, match=words):
        PosFileSink(config, bus.context("prices"))


def test_through_the_bus_each_batch_is_written_once(bus: Bus, tmp_path: Path) -> None:
    publisher = bus.publisher()
    envelopes = [batch(store) for store in ("0042", "0107", "0311")]
    assert publisher.publish_many([*envelopes, envelopes[0].replayed()]) == [None] * 4
    with running(bus.worker().run):
        wait_for(lambda: bus.store.count_events("duplicate") == 1, message="duplicate seen")
    for store in ("0042", "0107", "0311"):
        assert len(files_in(tmp_path / "outbox" / store, "*.CSV")) == 1
    assert bus.store.count_events("delivered") == 3
