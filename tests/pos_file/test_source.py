"""The pos_file source against the real RabbitMQ: publish, archive, dead letters, quarantine,
duplicates, stores, two bus instances on one inbox, and the mapping behind it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest

from connectors.pos_file import PosFileSource, PosFileSourceConfig
from connectors.pos_file.lane import daily_file_bytes
from integration_bus.store.schema import dead_letters
from tests.pos_file.support import (
    REPO,
    PosBus,
    daily_layout,
    drop,
    files_in,
    open_pos_bus,
    source_yaml,
)
from tests.support.probe import wait_for

pytestmark = pytest.mark.rabbitmq

NAME = "SALES_0042_20240301.DAT"


def sales(records: int, *, store: str = "0042", seed: int = 1) -> bytes:
    return daily_file_bytes(daily_layout(), store=store, records=records, seed=seed)


def replace_line(data: bytes, line: int, column: int, text: bytes) -> bytes:
    """``data`` with ``text`` written over line ``line`` (1-based) from ``column`` (1-based)."""
    lines = data.split(b"\r\n")
    target = lines[line - 1]
    lines[line - 1] = target[:column - 1] + text + target[column - 1 + len(text):]
    return b"\r\n".join(lines)


def test_a_daily_file_becomes_one_envelope_per_sale_line_and_is_archived(
        pos_bus: PosBus) -> None:
    # Given a 250-line daily sales file dropped into the inbox
    data = sales(250)
    sha = hashlib.sha256(data).hexdigest()
    drop(pos_bus.inbox(), NAME, data)
    # When the source and a worker run
    with pos_bus.running_worker(), pos_bus.running_source(pos_bus.source()):
        wait_for(lambda: files_in(pos_bus.work() / "archive") == [NAME], message="archived")
        wait_for(lambda: pos_bus.target.count() == 250, message="250 deliveries")
    # Then every sale line was delivered once, with its key, type and file:line
    envelopes = sorted(pos_bus.target.envelopes, key=lambda e: e.headers["source_ref"]["line"])
    assert [e.headers["source_ref"]["line"] for e in envelopes] == list(range(2, 252))
    assert {e.type for e in envelopes} == {"pos.sale_line"}
    assert envelopes[0].idempotency_key == f"pos:0042:{sha}:2"
    assert envelopes[0].headers["source_ref"] == {"file": NAME, "line": 2, "store": "0042"}
    # and the payloads are what the mapping's input schema wants (money as decimal strings)
    schema = json.loads((REPO / "schemas/sources/pos_sale_line.v1.json").read_text())
    for envelope in envelopes:
        jsonschema.validate(envelope.payload, schema)
    first = envelopes[0].payload
    assert first["store"] == "0042" and "." in first["unit_price"] and "amount" not in first
    assert pos_bus.target.duplicates() == {}
    # and the file left the inbox and processing/, and the ledger says archived
    assert files_in(pos_bus.inbox()) == [] and files_in(pos_bus.work() / "processing/node-a") == []
    entry = pos_bus.entry("0042", sha)
    assert entry is not None and (entry.state, entry.records, entry.confirmed) == (
        "archived", 250, 250)
    assert [e["file"] for e in pos_bus.events("pos_file.archived")] == [NAME]


def test_a_bad_record_becomes_a_dead_letter_with_file_line_and_the_rest_continue(
        pos_bus: PosBus) -> None:
    # Given a file whose line 7 has a quantity that is not a number (its amount is fine)
    data = replace_line(sales(20), 7, 58, b"00000X?")
    drop(pos_bus.inbox(), NAME, data)
    # When it is ingested
    with pos_bus.running_worker(), pos_bus.running_source(pos_bus.source()):
        wait_for(lambda: files_in(pos_bus.work() / "archive") == [NAME], message="archived")
        wait_for(lambda: pos_bus.target.count() == 19, message="19 deliveries")
    # Then line 7 is a dead letter naming file:line and field, with the raw line
    letters = pos_bus.bus.store.dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    assert letter["source_ref"] == {"file": NAME, "line": 7, "store": "0042"}
    assert letter["error_type"] == "ParseError" and letter["reason"] == "rejected"
    assert f"{NAME}:7:58" in letter["message"] and "field=qty" in letter["message"]
    assert letter["envelope"]["raw"] == data.split(b"\r\n")[6].decode()
    lines = {e.headers["source_ref"]["line"] for e in pos_bus.target.envelopes}
    assert lines == set(range(2, 22)) - {7}


def test_all_or_nothing_files_are_quarantined_for_one_bad_record(tmp_path: Path,
                                                                 rabbitmq_url: str) -> None:
    bus = open_pos_bus(tmp_path, rabbitmq_url,
                       sources=source_yaml(extra="on_bad_record: quarantine_file"))
    try:
        drop(bus.inbox(), NAME, replace_line(sales(20), 7, 58, b"00000X?"))
        with bus.running_source(bus.source()):
            wait_for(lambda: NAME in files_in(bus.work() / "error"), message="quarantined")
        assert bus.queued() == 0
        reason = orjson.loads((bus.work() / "error" / f"{NAME}.reason.json").read_bytes())
        assert reason["error_type"] == "FileStructureError" and reason["line"] == 7
    finally:
        bus.close()


@pytest.mark.parametrize(("case", "edit", "error_type", "line"), [
    ("count", (22, 2, b"000000021"), "ControlTotalError", 22),
    ("sum", (22, 11, b"000000000000001"), "ControlTotalError", 22),
    ("truncated", None, "FileStructureError", None),
])
def test_a_control_total_mismatch_quarantines_the_file_and_publishes_nothing(
        pos_bus: PosBus, case: str, edit: tuple[int, int, bytes] | None, error_type: str,
        line: int | None) -> None:
    # Given a 20-record file whose trailer disagrees with its records (or that was cut off)
    data = sales(20)
    data = replace_line(data, *edit) if edit else data[:data.rindex(b"\r\nT") + 2]
    drop(pos_bus.inbox(), NAME, data)
    # When the source looks at it
    with pos_bus.running_source(pos_bus.source()):
        wait_for(lambda: NAME in files_in(pos_bus.work() / "error"), message="quarantined")
    # Then it is in error/ with a reason file beside it, and not one record was published
    assert pos_bus.queued() == 0
    reason = orjson.loads((pos_bus.work() / "error" / f"{NAME}.reason.json").read_bytes())
    assert reason["error_type"] == error_type and reason["line"] == line
    assert reason["sha256"] == hashlib.sha256(data).hexdigest()
    if case == "count":
        assert "record_count is 21, the count of sale_line is 20" in reason["reason"]
    assert [e["file"] for e in pos_bus.events("pos_file.quarantined")] == [NAME]
    assert [(r.source, r.reason, r.count, r.newest)
            for r in pos_bus.bus.store.source_rejections()] == [
        ("tills", "quarantined", 1, [NAME])]
    entry = pos_bus.entry("0042", reason["sha256"])
    assert entry is not None and entry.state == "quarantined" and entry.confirmed == 0
    assert files_in(pos_bus.inbox()) == [] and files_in(pos_bus.work() / "archive") == []


def test_the_same_content_dropped_again_is_a_duplicate_with_no_effects(pos_bus: PosBus) -> None:
    data = sales(30)
    with pos_bus.running_worker(), pos_bus.running_source(pos_bus.source()):
        drop(pos_bus.inbox(), NAME, data)
        wait_for(lambda: files_in(pos_bus.work() / "archive") == [NAME], message="archived")
        wait_for(lambda: pos_bus.target.count() == 30, message="30 deliveries")
        # When the till sends the very same file again, under its name and under another
        drop(pos_bus.inbox(), NAME, data)
        drop(pos_bus.inbox(), "SALES_0042_20240301_resent.DAT", data)
        wait_for(lambda: len(files_in(pos_bus.work() / "duplicate")) == 2,
                 message="two duplicates moved aside")
    # Then both copies are recorded as duplicates, and nothing more was published
    assert pos_bus.queued() == 0 and pos_bus.target.count() == 30
    assert len(pos_bus.target.envelopes) == 30
    events = pos_bus.events("pos_file.duplicate")
    assert sorted(e["file"] for e in events) == [NAME, "SALES_0042_20240301_resent.DAT"]
    assert {e["first_seen_as"] for e in events} == {NAME}
    assert files_in(pos_bus.work() / "archive") == [NAME]
    # and they are source-level rejections: in the store (bus status) and on /metrics
    (rejected,) = pos_bus.bus.store.source_rejections()
    assert (rejected.source, rejected.reason, rejected.count) == ("tills", "duplicate", 2)
    assert sorted(rejected.newest) == [NAME, "SALES_0042_20240301_resent.DAT"]
    assert pos_bus.bus.metrics.registry.get_sample_value(
        "bus_source_rejections_total", {"source": "tills", "reason": "duplicate"}) == 2


def test_identical_files_from_two_stores_are_both_processed(pos_bus: PosBus) -> None:
    # Given two stores whose tills send byte-identical files (the store is in the file name)
    data = sales(5, store="0000")
    drop(pos_bus.inbox(), "SALES_0042_20240301.DAT", data)
    drop(pos_bus.inbox(), "SALES_0107_20240301.DAT", data)
    with pos_bus.running_worker(), pos_bus.running_source(pos_bus.source()):
        wait_for(lambda: len(files_in(pos_bus.work() / "archive")) == 2, message="archived")
        wait_for(lambda: pos_bus.target.count() == 10, message="10 deliveries")
    # Then neither is a duplicate of the other: each store's records had their effect
    assert files_in(pos_bus.work() / "duplicate") == []
    stores = sorted(e.idempotency_key.split(":")[1] for e in pos_bus.target.envelopes)
    assert stores == ["0042"] * 5 + ["0107"] * 5


def test_two_bus_instances_on_one_inbox_never_read_one_file(tmp_path: Path,
                                                            rabbitmq_url: str) -> None:
    # Given two sources (two nodes, own ledgers) watching the same inbox
    sources = source_yaml("tills_a") + "\n" + source_yaml("tills_b").replace(
        "node: node-a", "node: node-b")
    bus = open_pos_bus(tmp_path, rabbitmq_url, sources=sources)
    try:
        a, b = bus.source("tills_a"), bus.source("tills_b")
        with bus.running_source(a), bus.running_source(b):
            # When 40 files arrive
            for n in range(40):
                drop(bus.inbox(), f"SALES_{n:04d}_20240301.DAT", sales(10, seed=n))
            wait_for(lambda: len(files_in(bus.work() / "archive")) == 40, timeout=60,
                     message="40 archived")
        # Then every file was archived once, by one of them, and published once
        archived = bus.events("pos_file.archived")
        assert sorted(e["file"] for e in archived) == sorted(
            f"SALES_{n:04d}_20240301.DAT" for n in range(40))
        assert sum(e["published"] for e in archived) == 400 == bus.queued()
        published = {name: bus.bus.metrics.registry.get_sample_value(
            "pos_file_records_total", {"source": name, "outcome": "published"}) or 0
            for name in ("tills_a", "tills_b")}
        assert sum(published.values()) == 400
    finally:
        bus.close()


def test_sale_lines_map_to_canonical_sales_through_the_example_mapping(
        tmp_path: Path, rabbitmq_url: str) -> None:
    # Given the repository's mappings and schemas, and a route through pos_sale_line
    shutil.copytree(REPO / "mappings", tmp_path / "mappings")
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    bus = open_pos_bus(tmp_path, rabbitmq_url, routes="""
  sales:
    from: [pos.sale_line]
    pipeline: pos_sale_line
    to: [target]""")
    try:
        data = sales(60)
        drop(bus.inbox(), NAME, data)
        voids = sum(1 for line in data.split(b"\r\n") if line[:1] == b"D" and line[106:107] == b"Y")
        with bus.running_worker(), bus.running_source(bus.source()):
            wait_for(lambda: files_in(bus.work() / "archive") == [NAME], message="archived")
            wait_for(lambda: bus.target.count() == 60 - voids, message="canonical sales")
        # Then each non-void line became a canonical sale with exact money
        sale = bus.target.envelopes[0]
        assert sale.type == "sale.recorded" and sale.payload["store_id"] == "STORE-042"
        assert isinstance(sale.payload["net_amount"], str)
        assert bus.bus.store.dead_letters() == []
    finally:
        bus.close()


def test_records_no_route_takes_become_dead_letters(pos_bus: PosBus) -> None:
    """A mandatory publish that no route takes is an error, not a success: dead letters."""
    layout_text = (REPO / "config/layouts/daily_sales.yaml").read_text().replace(
        "type: pos.sale_line", "type: pos.unrouted_line")
    layout = pos_bus.root / "unrouted.yaml"
    layout.write_text(layout_text)
    config = pos_bus.bus.config.sources["tills"].config
    assert isinstance(config, PosFileSourceConfig)
    source = PosFileSource(config.model_copy(update={"layout": str(layout)}),
                           pos_bus.bus.context("tills"))
    drop(pos_bus.inbox(), NAME, sales(3))
    with pos_bus.running_source(source):
        wait_for(lambda: files_in(pos_bus.work() / "archive") == [NAME], message="archived")
    with pos_bus.bus.store.db.begin() as conn:
        rows = conn.execute(dead_letters.select()).mappings().all()
    assert sorted(r["source_ref"]["line"] for r in rows) == [2, 3, 4]
    assert {r["error_type"] for r in rows} == {"UnroutableError"}
    assert {r["source"] for r in rows} == {"tills"}


def test_inotify_finds_a_file_long_before_the_next_rescan(tmp_path: Path,
                                                         rabbitmq_url: str) -> None:
    bus = open_pos_bus(tmp_path, rabbitmq_url, sources=source_yaml(extra="rescan_interval: 5m"))
    try:
        drop(bus.inbox(), "SALES_0042_20240301.DAT", sales(3))
        with bus.running_source(bus.source()):
            # the first file is found by the listing at start; the second only by inotify
            wait_for(lambda: len(files_in(bus.work() / "archive")) == 1, message="first")
            drop(bus.inbox(), "SALES_0042_20240302.DAT", sales(3, seed=2))
            wait_for(lambda: len(files_in(bus.work() / "archive")) == 2, timeout=10,
                     message="the second, seen by inotify")
    finally:
        bus.close()
