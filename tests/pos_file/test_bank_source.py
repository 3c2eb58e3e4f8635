"""Bank files through the real ``pos_file`` source on a real folder and RabbitMQ (issue 13): a
NACHA file with filler records and the same entries without line breaks are archived and their
entries published with their batch's fields; malformed files are quarantined with the line and
column of the problem in the reason file, and nothing of them is published. The bank example's
own bus.yaml passes ``bus lint --build``."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from integration_bus.cli import cli
from tests.pos_file.bankfiles import SAMPLE_BATCHES, nacha_file, nacha_records
from tests.pos_file.support import REPO, drop, files_in, open_pos_bus
from tests.support.probe import wait_for

BANK = REPO / "config" / "examples" / "bank"
SOURCE = f"""
  bank_files:
    connector: pos_file
    inboxes: [{{path: inbox, store: bank}}]
    layout: {BANK / "layouts" / "nacha_ach.yaml"}
    pattern: "*.ach"
    rescan_interval: 300ms
    poll_interval: 50ms
    on_bad_record: quarantine_file
    node: node-a"""
ROUTES = """
  ach:
    from: [bank.ach_entry, bank.ach_addendum]
    to: [target]"""


@pytest.mark.rabbitmq
def test_nacha_files_with_filler_and_without_line_breaks_are_published_and_bad_ones_quarantined(
        tmp_path: Path, rabbitmq_url: str) -> None:
    bus = open_pos_bus(tmp_path, rabbitmq_url, sources=SOURCE, routes=ROUTES)
    try:
        inbox, work = bus.inbox(), bus.work()
        # Given the bank's file with line breaks and filler, the same entries without line
        # breaks (another file id), one cut short and one whose batch credit total is off
        drop(inbox, "ACH_A.ach", (BANK / "samples" / "ACH_20260301_A.ach").read_bytes())
        drop(inbox, "ACH_B.ach", nacha_file(SAMPLE_BATCHES, newlines=False, modifier="B"))
        short = nacha_file(SAMPLE_BATCHES, newlines=False, modifier="C")
        drop(inbox, "ACH_CUT.ach", short[:94 * 13 + 40])
        lines = nacha_records(SAMPLE_BATCHES, modifier="D")
        lines[2] = lines[2][:29] + "0000125001" + lines[2][39:]
        drop(inbox, "ACH_TOTAL.ach", "".join(line + "\r\n" for line in lines).encode())
        # When the source and a worker run
        with bus.running_worker(), bus.running_source(bus.source("bank_files")):
            wait_for(lambda: len(files_in(work / "archive")) == 2
                     and len(files_in(work / "error", "*.ach")) == 2, timeout=30,
                     message="two archived, two quarantined")
            wait_for(lambda: bus.target.count() == 16, message="8 records of each good file")
        # Then each good file gave its 5 entries and 3 addenda, with the batch's fields
        entries = [e.payload for e in bus.target.envelopes if e.type == "bank.ach_entry"]
        assert len(entries) == 10 and bus.target.duplicates() == {}
        by_file = {e.headers["source_ref"]["file"] for e in bus.target.envelopes}
        assert by_file == {"ACH_A.ach", "ACH_B.ach"}
        chargeback = next(e for e in entries if e["individual_id"] == "CHARGEBACK-17"
                          and e["file_id_modifier"] == "B")
        assert (chargeback["amount"], chargeback["transaction_code"],
                chargeback["company_name"], chargeback["batch_number"],
                chargeback["effective_entry_date"]) == ("45.00", "27", "CARD PROCESSOR", 2,
                                                        "2026-03-02")
        assert Decimal(chargeback["amount"]) == Decimal("45.00")
        # the source_ref line of a file without line breaks is the record's number
        lines_b = sorted(e.headers["source_ref"]["line"] for e in bus.target.envelopes
                         if e.headers["source_ref"]["file"] == "ACH_B.ach")
        assert lines_b == [3, 4, 5, 8, 9, 10, 11, 12]
        # And the malformed ones are in error/ with the line and column of the problem
        cut = orjson.loads((work / "error" / "ACH_CUT.ach.reason.json").read_bytes())
        assert (cut["error_type"], cut["line"], cut["column"]) == ("FileStructureError", 14,
                                                                   41)
        assert "cut short" in cut["reason"]
        total = orjson.loads((work / "error" / "ACH_TOTAL.ach.reason.json").read_bytes())
        assert (total["error_type"], total["line"], total["column"], total["field"]) == (
            "ControlTotalError", 6, 33, "total_credit")
        assert "is 1337.45" in total["reason"] and "is 1337.46" in total["reason"]
        assert {e["file"] for e in bus.events("pos_file.quarantined")} == {
            "ACH_CUT.ach", "ACH_TOTAL.ach"}
    finally:
        bus.close()


def test_the_bank_example_passes_bus_lint_build(tmp_path: Path) -> None:
    for folder in ("ach", "aba"):
        (tmp_path / folder).mkdir()
    env = {"BUS_STORE_URL": f"sqlite:///{tmp_path / 'bank.db'}", "BUS_VAR_DIR": str(tmp_path),
           "BANK_ACH_INBOX": str(tmp_path / "ach"), "BANK_ABA_INBOX": str(tmp_path / "aba"),
           "BUS_BROKER_URL": ""}
    result = CliRunner().invoke(cli, ["lint", "--build", "--config-dir", str(BANK)], env=env)
    assert result.exit_code == 0, result.output
    assert "bank/bus.yaml: ok (2 routes, 2 sources, 1 sinks)" in result.output
