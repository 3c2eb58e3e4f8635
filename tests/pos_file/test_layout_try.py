"""``bus layout try LAYOUT FILE`` (issue 13): the parsed records, or the first error with its
line and column; the layout's own mistakes exit 2 with a hint."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from integration_bus.cli import cli
from tests.pos_file.bankfiles import SAMPLE_BATCHES, nacha_records
from tests.pos_file.support import DAILY, REPO

BANK = REPO / "config" / "examples" / "bank"
NACHA = str(BANK / "layouts" / "nacha_ach.yaml")


def bus(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_a_good_file_shows_its_records_and_what_was_counted() -> None:
    code, out = bus("layout", "try", NACHA, str(BANK / "samples" / "ACH_20260301_B.ach"),
                    "--limit", "3")
    assert code == 0, out
    assert "file_header (header)" in out and "batch_header (batch_header)" in out
    assert "read: 1 file_header, 2 batch_header, 5 entry, 3 addendum, 2 batch_control, 1" in out
    assert "(6 filler, 2 batches)" in out and "13 control total(s) check out" in out
    code, out = bus("layout", "try", NACHA, str(BANK / "samples" / "ACH_20260301_A.ach"),
                    "--json", "--limit", "100")
    result = json.loads(out)
    assert code == 0 and result["ok"] and result["filler"] == 6
    entries = [r for r in result["records"] if r["record"] == "entry"]
    assert [e["values"]["amount"] for e in entries] == ["1250.00", "87.45", "18245.10",
                                                        "312.88", "45.00"]


def test_a_bad_file_shows_the_first_error_with_line_column_and_the_line(tmp_path: Path) -> None:
    lines = nacha_records(SAMPLE_BATCHES)
    lines[7] = lines[7][:29] + "00018245X0" + lines[7][39:]  # an amount that is no number
    path = tmp_path / "BAD.ach"
    path.write_bytes("".join(line + "\r\n" for line in lines).encode())
    code, out = bus("layout", "try", NACHA, str(path), "--json")
    error = json.loads(out)["error"]
    assert code == 1
    assert (error["type"], error["line"], error["column"], error["field"]) == (
        "ParseError", 8, 30, "amount")
    assert error["text"] == lines[7] and "'00018245X0' is not a number" in error["message"]
    code, out = bus("layout", "try", NACHA, str(path))
    assert code == 1 and "ParseError (line 8, column 30, field amount)" in out
    # a control total names the column of its trailer field, and the caret points at it
    lines = nacha_records(SAMPLE_BATCHES)
    lines[13] = lines[13][:7] + "000009" + lines[13][13:]
    path.write_bytes("".join(lines).encode())  # no line breaks: the line is the record's number
    code, out = bus("layout", "try", NACHA, str(path))
    assert code == 1 and "ControlTotalError (line 14, column 8, field block_count)" in out
    assert f"{lines[13]}\n       ^\n" in out


def test_a_wrong_layout_exits_2_with_its_file_line_and_a_hint(tmp_path: Path) -> None:
    layout = tmp_path / "L.yaml"
    layout.write_text("name: l\nformat: fixed\nrecords:\n  r:\n    type: x.r\n    fields:\n"
                      "      - {name: price, start: 1, length: 8, type: decimal, point: true}\n")
    code, out = bus("layout", "try", str(layout), str(DAILY))
    assert code == 2
    assert "L.yaml:7:9: records.r.fields[0]: field 'price': point: true needs a scale" in out
    assert "hint: add e.g. scale: 2" in out


def test_bus_help_lists_the_command_the_connector_adds() -> None:
    code, out = bus("--help")
    assert code == 0 and "layout" in out


def test_plain_bus_lint_refuses_a_layout_mistake_with_a_hint(tmp_path: Path) -> None:
    # issue 14: a decimal with point: true but no scale passed lint and failed at run time
    (tmp_path / "config" / "layouts").mkdir(parents=True)
    (tmp_path / "config" / "layouts" / "prices.yaml").write_text(
        "name: prices\nformat: delimited\nrecords:\n  price:\n    type: pos.price\n"
        "    fields:\n      - {name: sku}\n      - {name: price, type: decimal, point: true}\n")
    (tmp_path / "config" / "bus.yaml").write_text(
        "sources:\n  tills:\n    connector: pos_file\n    inboxes: [{path: var/in}]\n"
        "    layout: config/layouts/prices.yaml\n"
        "sinks:\n  out: {connector: log}\n"
        "routes:\n  prices: {from: [pos.price], to: [out]}\n")
    code, out = bus("lint", "--config-dir", str(tmp_path / "config"))
    assert code == 2
    assert "prices.yaml:8:9: records.price.fields[1]: field 'price': point: true needs a " \
           "scale" in out and "(instance=sources.tills)" in out
    assert "hint: add e.g. scale: 2 (money)" in out
