"""Properties (issue): ``parse(render(records)) == records`` for random layouts and records, and
random bytes never raise anything but a typed ParseError."""

from __future__ import annotations

import io
import string
from datetime import date, time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.pos_file.errors import ParseError
from connectors.pos_file.layout import LayoutSpec
from connectors.pos_file.parser import Layout, Record, parse_bytes
from connectors.pos_file.render import render_bytes, with_trailer
from connectors.pos_file.scan import iter_records, scan_file
from tests.pos_file.support import daily_layout

EXTRA_CHARS = {"ascii": "", "latin-1": "äöüßéÆ", "cp1252": "äöüß€Šœ", "utf-8": "äß€漢字🙂",
               "utf-8-sig": "é€字"}
DATE_FORMATS = {"%Y%m%d": 8, "%Y-%m-%d": 10, "%d.%m.%Y": 10}
TIME_FORMATS = {"%H%M%S": 6, "%H:%M:%S": 8}
PROPS = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- random layouts -----------------------------------------------------------------------------
@st.composite
def field_specs(draw: st.DrawFn, name: str, fixed: bool, first: bool) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "text", "int", "decimal", "date", "time"]))
    spec: dict[str, Any] = {"name": name, "type": kind,
                            "required": True if first else draw(st.booleans())}
    if kind in ("int", "decimal"):
        spec["sign"] = draw(st.sampled_from(["none", "leading", "trailing", "overpunch"]))
        spec["pad"] = draw(st.sampled_from([" ", "0"]))
        if kind == "decimal":
            spec["scale"] = draw(st.integers(0, 4))
            spec["point"] = spec["scale"] > 0 and draw(st.booleans())  # a point needs places
        narrowest = 1 + (spec["scale"] + 1 if spec.get("point") and spec["scale"] else 0) + (
            1 if spec["sign"] in ("leading", "trailing") else 0)
        width = draw(st.integers(narrowest, 16))
    elif kind == "text":
        spec["align"] = draw(st.sampled_from(["left", "right"]))
        spec["pad"] = draw(st.sampled_from([" ", "_", "*"]))
        width = draw(st.integers(1, 20))
    else:
        formats = DATE_FORMATS if kind == "date" else TIME_FORMATS
        spec["format"] = draw(st.sampled_from(sorted(formats)))
        width = formats[spec["format"]]
    if fixed:
        spec["length"] = width
    return spec


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    fixed = draw(st.booleans())
    multi = draw(st.booleans())
    data: dict[str, Any] = {"name": "random", "format": "fixed" if fixed else "delimited",
                            "encoding": draw(st.sampled_from(sorted(EXTRA_CHARS))),
                            "line_ending": draw(st.sampled_from(["crlf", "lf", "cr"]))}
    if not fixed:
        data["delimiter"] = draw(st.sampled_from([",", ";", "|", "\t"]))
        data["quote"] = draw(st.sampled_from(['"', "'", None]))
        data["header_row"] = not multi and draw(st.booleans())
    code_length = draw(st.integers(1, 2))
    roles = ["detail"] if not multi else draw(st.sampled_from([
        ["header", "detail", "trailer"], ["detail", "detail"], ["header", "detail"],
        ["detail", "trailer"], ["header", "detail", "detail", "trailer"]]))
    codes = draw(st.lists(st.text(string.ascii_uppercase + string.digits, min_size=code_length,
                                  max_size=code_length), min_size=len(roles),
                          max_size=len(roles), unique=True))
    records: dict[str, Any] = {}
    for index, role in enumerate(roles):
        count = draw(st.integers(1, 5))
        fields = [draw(field_specs(f"f{index}_{n}", fixed, first=(n == 0 and not multi)))
                  for n in range(count)]
        if role == "trailer":
            fields.append({"name": "record_count", "type": "int", "pad": "0", "length": 9})
        if fixed:
            start = code_length + 1 if multi else 1
            for spec in fields:
                spec["start"] = start
                start += spec["length"]
        else:
            for spec in fields:
                spec.pop("length", None)
        record: dict[str, Any] = {"role": role, "fields": fields}
        if role == "detail":
            record["type"] = f"test.r{index}"
        if multi:
            record["code"] = codes[index]
        records[f"r{index}"] = record
    data["records"] = records
    if multi:
        data["record_type"] = {"start": 1, "length": code_length} if fixed else {"column": 0}
        if "trailer" in roles:
            trailer = f"r{roles.index('trailer')}"
            details = [f"r{i}" for i, role in enumerate(roles) if role == "detail"]
            data["controls"] = [{"count": details, "equals": f"{trailer}.record_count"}]
    return Layout(LayoutSpec.model_validate(data))


# -- random records for a layout ----------------------------------------------------------------
def _text(layout: Layout, spec: Any) -> st.SearchStrategy[str]:
    alphabet = string.ascii_letters + string.digits + " .,;|'\"-_/*#" + \
        EXTRA_CHARS[layout.spec.encoding]
    if not layout.fixed and layout.spec.quote is None:
        alphabet = alphabet.replace(layout.spec.delimiter, "")
    width = spec.length or 12
    text = st.text(alphabet, min_size=1, max_size=width)
    if layout.fixed:
        side = str.rstrip if spec.alignment == "left" else str.lstrip
        text = text.map(lambda t: side(t, spec.pad))
    return text.filter(lambda t: t.strip(" ") != "")


def _number(spec: Any) -> st.SearchStrategy[Any]:
    """Numbers that fit the field: as many digits as its width leaves (minus the sign
    character, the point and the leading '0' of '0.05')."""
    room = (spec.length or 12) - (1 if spec.sign in ("leading", "trailing") else 0)
    if spec.type == "decimal" and spec.point and spec.scale:
        room -= 1  # the point
    digits = min(room, 18)
    high = 10 ** digits - 1
    ints = st.integers(-high if spec.sign != "none" else 0, high)
    if spec.type == "int":
        return ints
    return ints.map(lambda n: Decimal(n).scaleb(-spec.scale))


def _value(layout: Layout, spec: Any) -> st.SearchStrategy[Any]:
    if spec.type == "text":
        base: st.SearchStrategy[Any] = _text(layout, spec)
    elif spec.type in ("int", "decimal"):
        base = _number(spec)
    elif spec.type == "date":
        base = st.dates(date(1900, 1, 1), date(2099, 12, 31))
    else:
        base = st.times().map(lambda t: time(t.hour, t.minute, t.second))
    return base if spec.required else st.one_of(st.none(), base)


def _record(layout: Layout, name: str) -> st.SearchStrategy[Record]:
    codec = layout.records[name]
    fields = {c.name: _value(layout, c.spec) for c in codec.codecs if c.name != "record_count"}
    return st.fixed_dictionaries(fields).map(lambda values: Record(name, values))


@st.composite
def files(draw: st.DrawFn) -> tuple[Layout, list[Record]]:
    layout = draw(layouts())
    details = [n for n, r in layout.records.items() if r.spec.role == "detail"]
    body = draw(st.lists(st.sampled_from(details).flatmap(lambda n: _record(layout, n)),
                         min_size=1, max_size=8))
    body = [r for r in body if any(v not in (None, "") for v in r.values.values())
            or layout.spec.record_type is not None]
    if not body:
        body = [draw(_record(layout, details[0]))]
    header = draw(_record(layout, layout.header.name)).values if layout.header else None
    trailer = draw(_record(layout, layout.trailer.name)).values if layout.trailer else None
    return layout, list(with_trailer(layout, header, body, trailer))


def _renderable(layout: Layout, records: list[Record]) -> bytes | None:
    from connectors.pos_file.errors import RenderError

    try:
        return render_bytes(layout, records)
    except RenderError as exc:  # only "a record that is entirely blank" may be refused here
        assert "blank" in str(exc), exc
        return None


@PROPS
@given(files())
def test_parse_of_render_is_identity(case: tuple[Layout, list[Record]]) -> None:
    layout, records = case
    data = _renderable(layout, records)
    if data is None:
        return
    assert parse_bytes(layout, data) == records


@PROPS
@given(files(), st.binary(max_size=400))
def test_random_bytes_raise_only_parse_errors(case: tuple[Layout, list[Record]],
                                              noise: bytes) -> None:
    layout, records = case
    good = _renderable(layout, records) or b""
    for data in (noise, good[:len(good) // 2] + noise, noise + good):
        try:
            parse_bytes(layout, data, file="random.DAT")
        except ParseError as exc:
            assert exc.context.get("file") == "random.DAT"
        scan = scan_file(io.BytesIO(data), layout, file="random.DAT", max_bad=3,
                         all_or_nothing=False)
        assert scan.error is None or isinstance(scan.error, ParseError)
        for item in iter_records(io.BytesIO(data), layout, file="random.DAT"):
            assert (item.record is None) != (item.error is None)


@PROPS
@given(st.binary(max_size=2000), st.integers(0, 2000), st.binary(min_size=1, max_size=8))
def test_corrupted_daily_files_raise_only_parse_errors(noise: bytes, at: int,
                                                       patch: bytes) -> None:
    from connectors.pos_file.lane import daily_file_bytes

    layout = daily_layout()
    good = daily_file_bytes(layout, store="0042", records=10)
    at = at % len(good)
    for data in (noise, good[:at] + patch + good[at + len(patch):]):
        try:
            parse_bytes(layout, data)
        except ParseError:
            pass
        scan = scan_file(io.BytesIO(data), layout, file="x", max_bad=100, all_or_nothing=False)
        assert scan.error is None or isinstance(scan.error, ParseError)


@pytest.mark.parametrize("ending", [b"\r\n", b"\n", b"\r"])
def test_any_line_ending_and_a_missing_last_one(ending: bytes) -> None:
    from connectors.pos_file.lane import daily_file_bytes

    layout = daily_layout()
    good = daily_file_bytes(layout, store="0042", records=7)
    expected = parse_bytes(layout, good)
    converted = good.replace(b"\r\n", ending)
    assert parse_bytes(layout, converted) == expected
    assert parse_bytes(layout, converted.rstrip(ending)) == expected
