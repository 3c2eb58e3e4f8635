"""Bank-style fixed-width files (issue 13): NACHA/ACH and ABA direct entry layouts from
config/examples/bank/ — batches, filler records, block padding, fixed-length records without line
breaks, and control totals — parsed from files written independently of the layouts
(``tests/pos_file/bankfiles.py``). Every malformed file fails with its line and column."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.pos_file.checks import FileCheck
from connectors.pos_file.errors import ControlTotalError, FileStructureError, ParseError
from connectors.pos_file.layout_file import load_layout, parse_layout
from connectors.pos_file.parser import FILLER, Layout, parse_bytes
from connectors.pos_file.scan import iter_records, scan_file
from tests.pos_file.bankfiles import (
    SAMPLE_ABA,
    SAMPLE_BATCHES,
    AbaLine,
    aba_file,
    nacha_file,
    nacha_records,
)
from tests.pos_file.support import REPO

BANK = REPO / "config" / "examples" / "bank"
SAMPLES = BANK / "samples"


@pytest.fixture(scope="module")
def nacha() -> Layout:
    return load_layout(BANK / "layouts" / "nacha_ach.yaml")


@pytest.fixture(scope="module")
def aba() -> Layout:
    return load_layout(BANK / "layouts" / "aba_direct_entry.yaml")


def names(layout: Layout, data: bytes) -> list[str]:
    return [r.name for r in parse_bytes(layout, data, file="F")]


def failure(layout: Layout, data: bytes) -> ParseError:
    """The error that quarantines ``data`` (the source's first pass)."""
    scan = scan_file(io.BytesIO(data), layout, file="F.ach", max_bad=100, all_or_nothing=False)
    assert scan.error is not None, "the file was accepted"
    return scan.error


def test_the_sample_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    from tests.pos_file.bankfiles import write_samples

    for written in write_samples(tmp_path):
        assert written.read_bytes() == (SAMPLES / written.name).read_bytes(), written.name


def test_a_nacha_file_with_filler_lines_and_one_without_line_breaks_parse_alike(
        nacha: Layout) -> None:
    with_breaks = (SAMPLES / "ACH_20260301_A.ach").read_bytes()
    one_line = nacha_file(SAMPLE_BATCHES, newlines=False)
    assert b"\n" not in one_line and len(one_line) == 20 * 94
    expected = ["file_header", "batch_header", "entry", "addendum", "entry", "batch_control",
                "batch_header", "entry", "entry", "entry", "addendum", "addendum",
                "batch_control", "file_control"]
    assert names(nacha, with_breaks) == names(nacha, one_line) == expected
    assert parse_bytes(nacha, with_breaks) == parse_bytes(nacha, one_line)
    # the six all-'9' records after the file control are filler: counted, not records
    check = FileCheck(nacha)
    for number, _, raw in nacha.read_lines(io.BytesIO(one_line)):
        check.feed(nacha.parse_line(raw.decode(), number), number)
    check.finish()
    assert (check.records, check.filler, check.batches) == (14, 6, 2)
    entry = parse_bytes(nacha, one_line)[2].values
    assert (entry["amount"], entry["receiving_dfi"], entry["trace_number"]) == (
        Decimal("1250.00"), "09100001", "071000500000001")


def test_the_first_pass_streams_a_file_without_line_breaks(nacha: Layout) -> None:
    data = nacha_file(SAMPLE_BATCHES * 40, newlines=False)  # 80 batches, one 45 KB line
    scan = scan_file(io.BytesIO(data), nacha, file="F.ach", max_bad=0, all_or_nothing=True,
                     chunk_bytes=1000)
    assert scan.error is None and scan.details == 40 * 8 and scan.lines == 490
    items = list(iter_records(io.BytesIO(data), nacha, file="F.ach"))
    assert sum(1 for i in items if i.record is FILLER) == 490 - 40 * 12 - 2
    # resuming at a record's offset (the ledger's) reads on from the next record
    resumed = list(iter_records(io.BytesIO(data), nacha, file="F.ach", offset=items[9].end,
                                line=items[9].line))
    assert resumed == items[10:]


def nacha_lines(**options: object) -> list[str]:
    return nacha_records(SAMPLE_BATCHES, **options)  # type: ignore[arg-type]


def joined(lines: list[str], newlines: bool = True) -> bytes:
    return "".join(line + ("\r\n" if newlines else "") for line in lines).encode()


def edited(lines: list[str], number: int, column: int, text: str) -> list[str]:
    """``lines`` with ``text`` written over line ``number`` (1-based) from ``column``."""
    out = list(lines)
    line = out[number - 1]
    out[number - 1] = line[:column - 1] + text + line[column - 1 + len(text):]
    return out


@pytest.mark.parametrize(("case", "error_type", "line", "column", "words"), [
    # an entry amount changed: its batch control's credit total (line 6) disagrees
    ("amount", ControlTotalError, 6, 33, "total_credit is 1337.45, the sum of entry.amount "
                                         "where transaction_code in"),
    # an entry's routing number changed: the entry hash (rightmost 10 digits) disagrees
    ("hash", ControlTotalError, 6, 11, "entry_hash is 18200002, the sum of entry.receiving_dfi"),
    # the batch control names another batch than its header
    ("batch number", ControlTotalError, 13, 88, "batch_number is 3, the "
                                                "batch_header.batch_number is 2"),
    # the file control's block count is wrong
    ("blocks", ControlTotalError, 14, 8, "block_count is 3, the number of blocks is 2"),
    # the file is not padded to a whole block
    ("unpadded", FileStructureError, None, None, "14 records (0 of them filler) do not fill "
                                                 "whole blocks of 10"),
    # a filler record before the file control record
    ("early filler", FileStructureError, 14, None, "a filler record before the trailer"),
    # a record after the filler
    ("after filler", FileStructureError, 16, None, "a record (entry) follows the filler"),
    # an entry outside any batch
    ("outside batch", FileStructureError, 7, None, "outside a batch"),
    # a batch without its control record
    ("unclosed batch", FileStructureError, 6, None, "before the batch of line 2 was closed"),
    # an amount that is not a number: the totals cannot be verified
    ("bad amount", ControlTotalError, 3, None, "totals over entry.amount cannot be verified"),
    # a record type the layout does not know
    ("unknown type", FileStructureError, 8, None, "a line of unknown type is unreadable"),
])
def test_malformed_nacha_files_fail_with_line_and_column(
        nacha: Layout, case: str, error_type: type[ParseError], line: int | None,
        column: int | None, words: str) -> None:
    lines = nacha_lines()
    if case == "amount":
        lines = edited(lines, 3, 30, "0000125001")
    elif case == "hash":
        lines = edited(lines, 3, 4, "08100001")
    elif case == "batch number":
        lines = edited(lines, 13, 88, "0000003")
    elif case == "blocks":
        lines = edited(lines, 14, 8, "000003")
    elif case == "unpadded":
        lines = nacha_lines(pad=False)
    elif case == "early filler":
        lines = [*lines[:13], "9" * 94, lines[13], *lines[14:-1]]
    elif case == "after filler":
        lines = [*lines[:15], lines[2], *lines[16:]]
    elif case == "outside batch":
        lines = [*lines[:6], lines[2], *lines[6:-1]]
    elif case == "unclosed batch":
        lines = [*lines[:5], *lines[6:], "9" * 94]
    elif case == "bad amount":
        lines = edited(lines, 3, 30, "00001250X0")
    elif case == "unknown type":
        lines = edited(lines, 8, 1, "X")
    for newlines in (True, False):  # the same reasons with and without line breaks
        error = failure(nacha, joined(lines, newlines))
        assert type(error) is error_type, error
        assert words in error.message, error
        assert (error.context.get("line"), error.context.get("column")) == (line, column)
        assert error.context["file"] == "F.ach"


def test_a_file_without_line_breaks_cut_short_names_the_record_and_column(
        nacha: Layout) -> None:
    data = nacha_file(SAMPLE_BATCHES, newlines=False)[:-94 * 6 - 30]  # mid file control
    error = failure(nacha, data)
    assert isinstance(error, FileStructureError)
    assert (error.context["line"], error.context["column"]) == (14, 65)
    assert "the last record is 64 bytes, records are 94: the file is cut short" in str(error)


def test_a_line_longer_than_the_record_length_is_refused(nacha: Layout) -> None:
    lines = nacha_lines()
    lines[4] += "X"
    error = failure(nacha, joined(lines))
    assert isinstance(error, FileStructureError)
    assert (error.context["line"], error.context["column"]) == (5, 95)


def test_an_aba_file_parses_and_its_totals_are_checked(aba: Layout) -> None:
    data = (SAMPLES / "DE_20260302_REFUNDS.aba").read_bytes()
    records = parse_bytes(aba, data)
    assert [r.name for r in records] == ["descriptive", "detail", "detail", "detail",
                                         "file_total"]
    assert records[-1].values["net_total"] == Decimal("79.47")  # 59.97 + 24.50 - 5.00
    assert parse_bytes(aba, aba_file(SAMPLE_ABA, newlines=False)) == records
    # more debits than credits: the net total is still written without a sign
    refund = [*SAMPLE_ABA, AbaLine("032-000", "123456789", "13", Decimal("100.00"), "X", "Y")]
    assert parse_bytes(aba, aba_file(refund))[-1].values["net_total"] == Decimal("20.53")
    lines = data.decode().split("\r\n")
    wrong_net = lines[4][:20] + "0000007948" + lines[4][30:]
    error = failure(aba, "\r\n".join([*lines[:4], wrong_net, ""]).encode())
    assert isinstance(error, ControlTotalError)
    assert (error.context["line"], error.context["column"]) == (5, 21)
    assert "net_total is 79.48, the absolute sum of detail.amount less those where " \
           "transaction_code in ['13']" in error.message


@pytest.mark.parametrize(("yaml", "words"), [
    ("record_length: 4\n", "past the record length 4"),
    ("block_factor: 10\n", "block_factor needs a filler record"),
    ("filler: {pattern: '9*'}\n", "matches an empty record"),
    ("controls:\n  - {blocks: true, equals: t.n}\n", "needs the layout's block_factor"),
    ("controls:\n  - {sum: d.a, where: {a: [1]}, equals: t.n}\n", "quote the values"),
    ("controls:\n  - {count: [d], digits: 3, equals: t.n}\n", "apply to a 'sum' control"),
    ("controls:\n  - {match: d.a, equals: t.n}\n", "repeats a field of the (batch) header"),
    ("record_length: 94\n", "needs a single-byte encoding"),
])
def test_layout_mistakes_in_the_new_options_fail_at_load(yaml: str, words: str) -> None:
    encoding = "utf-8" if "94" in yaml else "ascii"
    base = (f"name: b\nformat: fixed\nencoding: {encoding}\n"
            "record_type: {start: 1, length: 1}\n"
            "records:\n  d: {code: D, type: x.d, fields: [{name: a, start: 2, length: 4}]}\n"
            "  t: {code: T, role: trailer, fields: [{name: n, start: 2, length: 4, "
            "type: int}]}\n")
    with pytest.raises(Exception) as caught:
        parse_layout(base + yaml, source="b.yaml")
    assert words in str(caught.value), caught.value
    assert caught.value.context.get("line")  # type: ignore[attr-defined]
