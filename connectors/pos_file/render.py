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

from connectors.pos_file.checks import compile_control
from connectors.pos_file.errors import ControlTotalError, RenderError
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
    """Header, details and a trailer whose control fields are computed from the details (and
    ``match`` fields copied from the header). Layouts with batches or blocks are not written."""
    if layout.spec.batched or layout.spec.block_factor is not None:
        raise RenderError(f"the layout {layout.spec.name!r} has batches or blocks, which are "
                          "read but not written")
    if layout.header is not None:
        yield Record(layout.header.name, dict(header or {}))
    elif header:
        raise RenderError(f"the layout {layout.spec.name!r} has no header record")
    controls = [compile_control(layout, c) for c in layout.spec.controls]
    totals = [0] * len(controls)
    for record in details:
        codec = layout.records.get(record.name)
        if codec is None or codec.spec.role != "detail":
            raise RenderError(f"{record.name!r} is not a detail record of {layout.spec.name!r}")
        for index, control in enumerate(controls):
            if control.applies(record.name):
                try:
                    totals[index] += control.delta(record.values.get)
                except ControlTotalError as exc:
                    raise RenderError(exc.message, field=exc.context.get("field")) from None
        yield record
    if layout.trailer is None:
        return
    values = dict(trailer or {})
    for index, control in enumerate(controls):
        if control.spec.match is not None:
            values[control.target] = (header or {}).get(control.spec.match.partition(".")[2])
            continue
        total = control.actual(totals[index])
        spec = layout.trailer.by_name[control.target].spec
        if spec.type == "int":
            if total != int(total):
                raise RenderError(f"trailer {control.target} is an int but the total {total} "
                                  "is not", field=control.target)
            values[control.target] = int(total)
        else:
            values[control.target] = Decimal(total).quantize(Decimal(1).scaleb(-spec.scale))
    yield Record(layout.trailer.name, values)
