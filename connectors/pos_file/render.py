"""Rendering: records → lines → bytes in a layout (the inverse of ``parser``).

``render_bytes(layout, records)`` gives a file that ``parse_bytes`` reads back to the same
records. :func:`with_trailer` completes a trailer's control totals from the detail records, so a
sink only supplies the header and the details. Every problem is a :class:`RenderError` naming the
record and field.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from connectors.pos_file.errors import RenderError
from connectors.pos_file.parser import Layout, Record, RecordCodec

__all__ = ["render_bytes", "render_line", "render_lines", "with_trailer"]

_ENDINGS = {"crlf": "\r\n", "lf": "\n", "cr": "\r"}


def render_line(layout: Layout, record: Record) -> str:
    """One record as a line of text (without line ending)."""
    codec = layout.records.get(record.name)
    if codec is None:
        raise RenderError(f"the layout {layout.spec.name!r} has no record {record.name!r}")
    unknown = set(record.values) - set(codec.by_name)
    if unknown:
        raise RenderError(f"record {record.name}: unknown field(s) {sorted(unknown)}",
                          field=sorted(unknown)[0])
    cells = [c.encode(record.values.get(c.name)) for c in codec.codecs]
    line = _fixed(layout, codec, cells) if layout.fixed else _delimited(layout, codec, cells)
    if not line.strip(" \t"):
        raise RenderError(f"record {record.name}: every field is blank, and a blank line is "
                          "not a record")
    return line


def _fixed(layout: Layout, codec: RecordCodec, cells: list[str]) -> str:
    line = [" "] * codec.width
    span = layout.spec.record_type
    if span is not None and span.start is not None and codec.spec.code is not None:
        line[span.start - 1:span.start - 1 + len(codec.spec.code)] = codec.spec.code
    for field, text in zip(codec.codecs, cells, strict=True):
        start = (field.spec.start or 1) - 1
        line[start:start + len(text)] = text
    return "".join(line)


def _delimited(layout: Layout, codec: RecordCodec, cells: list[str]) -> str:
    spec = layout.spec
    if spec.record_type is not None and codec.spec.code is not None:
        cells.insert(spec.record_type.column or 0, codec.spec.code)
    if spec.quote is None:
        for text in cells:
            if spec.delimiter in text:
                raise RenderError(f"record {codec.name}: {text!r} contains the delimiter and "
                                  "the layout has no quote character")
        return spec.delimiter.join(cells)
    out = io.StringIO()
    csv.writer(out, delimiter=spec.delimiter, quotechar=spec.quote, lineterminator="",
               quoting=csv.QUOTE_MINIMAL, doublequote=True).writerow(cells)
    return out.getvalue()


def render_lines(layout: Layout, records: Iterable[Record]) -> Iterator[str]:
    """Lines of a file (a column-header row first when the layout has one)."""
    if layout.spec.header_row:
        yield _delimited(layout, layout.records[next(iter(layout.records))],
                         list(layout.column_names))
    for record in records:
        yield render_line(layout, record)


def render_bytes(layout: Layout, records: Iterable[Record]) -> bytes:
    """A whole file in the layout's encoding and line ending (UTF-8 BOM for ``utf-8-sig``)."""
    ending = _ENDINGS[layout.spec.line_ending]
    text = "".join(line + ending for line in render_lines(layout, records))
    try:
        data = text.encode(layout.encoding)
    except UnicodeEncodeError as exc:
        raise RenderError(f"{text[exc.start]!r} cannot be written in {layout.encoding}") from None
    return (b"\xef\xbb\xbf" + data) if layout.spec.encoding == "utf-8-sig" else data


def with_trailer(layout: Layout, header: Mapping[str, Any] | None,
                 details: Iterable[Record], trailer: Mapping[str, Any] | None = None
                 ) -> Iterator[Record]:
    """Header, details and a trailer whose control fields are computed from the details."""
    if layout.header is not None:
        yield Record(layout.header.name, dict(header or {}))
    elif header:
        raise RenderError(f"the layout {layout.spec.name!r} has no header record")
    counts: dict[str, int] = {}
    minor: dict[str, int] = {}  # exact sums in minor units of the summed field
    for record in details:
        codec = layout.records.get(record.name)
        if codec is None or codec.spec.role != "detail":
            raise RenderError(f"{record.name!r} is not a detail record of {layout.spec.name!r}")
        counts[record.name] = counts.get(record.name, 0) + 1
        for control in layout.spec.controls:
            rname, _, fname = (control.sum or "").partition(".")
            if rname == record.name:
                scale = codec.by_name[fname].spec.scale
                minor[control.sum or ""] = (minor.get(control.sum or "", 0)
                                            + _minor(record.values.get(fname), scale, fname))
        yield record
    if layout.trailer is None:
        return
    values = dict(trailer or {})
    for control in layout.spec.controls:
        target = control.equals.partition(".")[2]
        if control.count is not None:
            values[target] = sum(counts.get(name, 0) for name in control.count)
            continue
        rname, _, fname = (control.sum or "").partition(".")
        scale = layout.records[rname].by_name[fname].spec.scale
        total = Decimal(f"{minor.get(control.sum or '', 0)}e-{scale}")
        spec = layout.trailer.by_name[target].spec
        if spec.type == "int":
            if total != total.to_integral_value():
                raise RenderError(f"trailer {target} is an int but the sum {total} is not",
                                  field=target)
            values[target] = int(total)
        else:
            values[target] = total.quantize(Decimal(1).scaleb(-spec.scale))
    yield Record(layout.trailer.name, values)


def _minor(value: Any, scale: int, field: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise RenderError(f"{field}: expected a number, got {value!r}", field=field)
    scaled = Decimal(value).scaleb(scale)
    if scaled != scaled.to_integral_value():
        raise RenderError(f"{field}: {value} has more than {scale} decimal places", field=field)
    return int(scaled)
