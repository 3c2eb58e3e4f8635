"""Layouts, field codecs and the parser, without I/O: what is accepted, what is refused, and that
every refusal is typed and names where (layout file:line, data file:line:column, field)."""

from __future__ import annotations

import io
import textwrap
import tracemalloc
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.pos_file.errors import (
    ControlTotalError,
    FileStructureError,
    LayoutError,
    ParseError,
)
from connectors.pos_file.fields import FieldError, compile_field
from connectors.pos_file.lane import daily_file_bytes
from connectors.pos_file.layout import FieldSpec
from connectors.pos_file.layout_file import load_layout, parse_layout
from connectors.pos_file.parser import Record, parse_bytes
from connectors.pos_file.render import render_line
from connectors.pos_file.scan import scan_file
from tests.pos_file.support import LAYOUTS, daily_layout


def layout_error(text: str) -> LayoutError:
    with pytest.raises(LayoutError) as caught:
        parse_layout(textwrap.dedent(text), source="bad.yaml")
    return caught.value


BASE = """
name: t
format: fixed
record_type: {start: 1, length: 1}
records:
  sale:
    code: "D"
    type: pos.sale
    fields:
      - {name: a, start: 2, length: 3}
      - {name: b, start: 5, length: 4, type: int}
"""


def test_the_shipped_layouts_load() -> None:
    for path in sorted(LAYOUTS.glob("*.yaml")):
        assert load_layout(path).spec.name == path.stem


@pytest.mark.parametrize(("change", "line", "words"), [
    (("start: 5, length: 4, type: int", "start: 4, length: 4, type: int"), 3,
     "a and b overlap"),
    (('code: "D"', 'code: "DX"'), 3, "not 1 characters"),
    (("type: int}", "type: int, scale: 2}"), 3, "scale/point apply to decimals"),
    (("type: pos.sale", "type: Pos Sale"), 3, "invalid message type"),
    (("fields:", "fieldz:"), 3, "fieldz"),
    (("length: 4, type: int}", "length: 1, type: int, sign: leading}"), 3,
     "cannot hold a value"),
])
def test_layout_mistakes_fail_at_load_naming_the_line(change: tuple[str, str], line: int,
                                                      words: str) -> None:
    error = layout_error(BASE.replace(*change))
    assert words in str(error)
    assert error.context["file"] == "bad.yaml" and error.context["line"] >= line


def test_controls_must_name_real_trailer_fields() -> None:
    text = BASE + textwrap.dedent("""
      trailer:
        code: "T"
        role: trailer
        fields: [{name: n, start: 2, length: 5, type: int}]
    controls:
      - {count: [sale], equals: trailer.missing}
    """)
    assert "no such record.field" in str(layout_error(text))


def test_yaml_anchors_and_custom_tags_are_refused() -> None:
    assert "anchors" in str(layout_error(BASE + "x: &a 1\ny: *a\n"))
    assert "YAML tag" in str(layout_error(BASE + "x: !python/object 1\n"))


@pytest.mark.parametrize(("text", "value"), [
    ("00012{", 120), ("00012}", -120), ("0001J", -11), ("0000A", 1), ("00001p", -10),
    ("   42", 42), ("000000", 0), ("00000}", 0),
])
def test_overpunch_signed_zoned_decimal(text: str, value: int) -> None:
    codec = compile_field(FieldSpec(name="n", type="int", sign="overpunch", start=1,
                                    length=len(text)), fixed=True)
    assert codec.decode(text) == value


@pytest.mark.parametrize(("options", "text", "value"), [
    ({"scale": 2}, "0001999", Decimal("19.99")),
    ({"scale": 2, "sign": "trailing"}, "001999-", Decimal("-19.99")),
    ({"scale": 2, "sign": "leading"}, "-001999", Decimal("-19.99")),
    ({"scale": 3, "point": True}, "  12.5", Decimal("12.500")),
    ({"scale": 0}, "0000000", Decimal(0)),
])
def test_decimals_are_exact_with_implied_or_written_scale(options: dict[str, object],
                                                          text: str, value: Decimal) -> None:
    spec = FieldSpec.model_validate({"name": "d", "type": "decimal", "start": 1,
                                     "length": len(text), **options})
    codec = compile_field(spec, fixed=True)
    decoded = codec.decode(text)
    assert decoded == value and decoded.as_tuple().exponent == -spec.scale
    assert codec.decode(codec.encode(decoded)) == decoded


@pytest.mark.parametrize("text", ["12a", "1.2.3", "--1", "1e5", "١٢٣", "0x10", "1_000"])
def test_numbers_refuse_anything_but_ascii_digits(text: str) -> None:
    codec = compile_field(FieldSpec(name="n", type="decimal", scale=2, point=True,
                                    sign="leading", length=6, start=1), fixed=True)
    with pytest.raises(FieldError, match="n: "):
        codec.decode(text.rjust(6))


def test_parse_errors_name_file_line_column_and_field() -> None:
    layout = daily_layout()
    good = daily_file_bytes(layout, store="0042", records=3)
    lines = good.split(b"\r\n")
    cases = {
        3: (lines[2][:57] + b"12345Z!" + lines[2][64:], 58, "qty"),  # not a number
        2: (b"X" + lines[1][1:], 1, "record_type"),  # unknown record type
        4: (lines[3][:20] + b"\x81" + lines[3][21:], 21, None),  # not cp1252
    }
    for number, (line, column, field) in cases.items():
        with pytest.raises(ParseError) as caught:
            text = layout.decode(line, number, file="F.DAT")
            layout.parse_line(text, number, file="F.DAT")
        context = caught.value.context
        assert (context["file"], context["line"], context.get("column")) == (
            "F.DAT", number, column)
        assert context.get("field") == field


def test_structure_and_control_totals() -> None:
    layout = daily_layout()
    good = daily_file_bytes(layout, store="0042", records=4)
    lines = good.split(b"\r\n")
    with pytest.raises(FileStructureError, match="does not start with a header"):
        parse_bytes(layout, b"\r\n".join(lines[1:]))
    with pytest.raises(FileStructureError, match="follows the trailer"):
        parse_bytes(layout, good + lines[1] + b"\r\n")
    with pytest.raises(ControlTotalError, match=r"over sale_line\.amount cannot be verified"):
        bad_amount = lines[2][:107] + b"0000000ABC??"[:13].ljust(13) + lines[2][120:]
        check = scan_file(io.BytesIO(b"\r\n".join([*lines[:2], bad_amount, *lines[3:]])),
                          layout, file="F.DAT", max_bad=10, all_or_nothing=False)
        raise check.error or AssertionError("not refused")
    # a bad field that the totals do not need leaves the file valid: one bad record
    bad_qty = lines[2][:57] + b"00000X?" + lines[2][64:]
    scan = scan_file(io.BytesIO(b"\r\n".join([*lines[:2], bad_qty, *lines[3:]])), layout,
                     file="F.DAT", max_bad=10, all_or_nothing=False)
    assert (scan.error, scan.bad, scan.details) == (None, 1, 4)


def test_encodings_and_byte_order_mark() -> None:
    text = """
    name: names
    format: delimited
    encoding: {encoding}
    delimiter: ";"
    records:
      r: {{type: t.r, fields: [{{name: who}}, {{name: day, type: date}}]}}
    """
    for encoding, data in [("utf-8", "\ufeffJürgen;20240301\n".encode()),
                           ("utf-8-sig", "\ufeffJürgen;20240301\n".encode()),
                           ("cp1252", "Jürgen;20240301\r\n".encode("cp1252")),
                           ("latin-1", "Jürgen;20240301\r".encode("latin-1"))]:
        layout = parse_layout(textwrap.dedent(text.format(encoding=encoding)))
        assert parse_bytes(layout, data) == [Record("r", {"who": "Jürgen",
                                                          "day": date(2024, 3, 1)})]


def test_delimited_quoting_and_column_header_row() -> None:
    layout = load_layout(LAYOUTS / "price_download.yaml")
    data = b'sku;description;price;currency;valid_from\n"A;1";"Pen ""blue""";1.50;EUR;2026-01-01\n'
    (record,) = parse_bytes(layout, data)
    assert record.values["sku"] == "A;1" and record.values["description"] == 'Pen "blue"'
    with pytest.raises(FileStructureError, match="column header"):
        parse_bytes(layout, data.replace(b"sku;", b"item;"))
    with pytest.raises(ParseError, match="cannot split"):
        parse_bytes(layout, data + b'"B;1;2.00;EUR;2026-01-01\n')


def _repeated_daily_file(path: Path, times: int) -> int:
    """A valid daily file of ``times`` x 1,000 records, built by repeating a rendered block."""
    layout = daily_layout()
    lines = daily_file_bytes(layout, store="0042", records=1000).split(b"\r\n")
    header, details = lines[0], lines[1:1001]
    trailer = layout.parse_line(lines[1001].decode(), 1002)
    total = trailer.values["amount_total"] * times
    end = render_line(layout, Record("trailer", {"record_count": 1000 * times,
                                                 "amount_total": total}))
    with path.open("wb") as out:
        out.write(header + b"\r\n")
        block = b"\r\n".join(details) + b"\r\n"
        for _ in range(times):
            out.write(block)
        out.write(end.encode() + b"\r\n")
    return 1000 * times


def test_parsing_streams_in_constant_memory(tmp_path: Path) -> None:
    """The scan's peak memory does not grow with the file (16 KiB reads: 0.6 MB and 3 MB
    files peak alike, at a small multiple of one read)."""
    layout = daily_layout()
    peaks = []
    for times in (5, 25):
        path = tmp_path / f"{times}.DAT"
        records = _repeated_daily_file(path, times)
        with path.open("rb") as handle:
            tracemalloc.start()
            scan = scan_file(handle, layout, file=path.name, max_bad=0, all_or_nothing=True,
                             chunk_bytes=16 << 10)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        assert scan.error is None and scan.details == records
    assert peaks[1] < 256 << 10 and abs(peaks[1] - peaks[0]) < 32 << 10, peaks


def test_a_file_without_line_breaks_is_refused_without_reading_it_into_memory(
        tmp_path: Path) -> None:
    path = tmp_path / "blob.DAT"
    path.write_bytes(b"H" * (8 << 20))
    with path.open("rb") as handle:
        tracemalloc.start()
        scan = scan_file(handle, daily_layout(), file="blob.DAT", max_bad=0,
                         all_or_nothing=True, chunk_bytes=64 << 10)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert isinstance(scan.error, FileStructureError) and "longer than" in str(scan.error)
    assert scan.size == 8 << 20 and peak < 1 << 20  # the 64 KiB default line limit + a read
