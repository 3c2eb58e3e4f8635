"""Parsing: a compiled :class:`Layout` turns one line into a :class:`Record`, or says exactly why
not with a typed :class:`ParseError` naming file, line, column and field.

``Layout.parse_line`` is the per-line contract (pure, no I/O). :func:`parse_bytes` parses a whole
small file strictly (first error raises; structure and control totals checked) — the inverse of
``render.render_bytes``. Large files go through ``scan.scan_file`` / ``scan.iter_records``, which
stream. Nothing here raises anything but ParseError (and its subclasses) for bad input.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from connectors.pos_file.errors import FileStructureError, ParseError
from connectors.pos_file.fields import FieldCodec, FieldError, compile_field
from connectors.pos_file.layout import LayoutSpec, RecordSpec
from connectors.pos_file.lines import CHUNK_BYTES, RawLine, read_lines, read_records

__all__ = ["FILLER", "Layout", "Record", "RecordCodec", "parse_bytes"]

_BOM = b"\xef\xbb\xbf"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tab is data; the rest is not


@dataclass(frozen=True, slots=True)
class Record:
    """One parsed record: the layout's record name and its field values, in layout order."""

    name: str
    values: dict[str, Any]


FILLER = Record("(filler)", {})
"""What a filler record parses to (a name no layout record can have): counted, never used."""


class RecordCodec:
    """A compiled record: its fields' codecs, slices (fixed) or columns (delimited)."""

    def __init__(self, name: str, spec: RecordSpec, *, fixed: bool) -> None:
        self.name, self.spec = name, spec
        self.codecs: tuple[FieldCodec, ...] = tuple(compile_field(f, fixed=fixed)
                                                    for f in spec.fields)
        self.by_name = {c.name: c for c in self.codecs}
        self.width = max((f.end for f in spec.fields), default=0) if fixed else 0
        self.slices = tuple((c.name, (c.spec.start or 1) - 1, c.spec.end if fixed else 0,
                             c.decode) for c in self.codecs)


class Layout:
    """A validated, compiled layout. Immutable and shareable between threads."""

    def __init__(self, spec: LayoutSpec, *, source: str = "<layout>") -> None:
        self.spec, self.source = spec, source
        self.fixed = spec.format == "fixed"
        self.records = {name: RecordCodec(name, r, fixed=self.fixed)
                        for name, r in spec.records.items()}
        self.by_code = {r.spec.code: r for r in self.records.values() if r.spec.code}
        self.single = next(iter(self.records.values())) if spec.record_type is None else None
        self.header, self.trailer, self.batch_header, self.batch_trailer = (
            self.records[found[0]] if (found := spec.record_of(role)) else None
            for role in ("header", "trailer", "batch_header", "batch_trailer"))
        self._filler = re.compile(spec.filler.pattern) if spec.filler else None
        self.width = max((r.width for r in self.records.values()), default=0)
        code = spec.record_type
        self._code_span = ((code.start - 1, code.start - 1 + code.length)
                           if code and code.start and code.length else None)
        self._code_column = code.column if code else None
        self.encoding = "utf-8" if spec.encoding == "utf-8-sig" else spec.encoding
        self.column_names = [f.name for f in self.single.spec.fields] if self.single else []

    # -- lines -----------------------------------------------------------------------------------
    def read_lines(self, handle: BinaryIO, *, offset: int = 0, number: int = 0,
                   chunk_bytes: int = CHUNK_BYTES,
                   observe: Callable[[bytes], None] | None = None,
                   file: str | None = None) -> Iterator[RawLine]:
        """The raw records of ``handle`` from ``offset``: lines, or fixed-length records (with
        or without line breaks) when the layout has a ``record_length``."""
        if self.spec.record_length is not None:
            return read_records(handle, self.spec.record_length, offset=offset, number=number,
                                chunk_bytes=chunk_bytes, observe=observe, file=file)
        return read_lines(handle, offset=offset, number=number,
                          max_length=self.spec.max_line_length, chunk_bytes=chunk_bytes,
                          observe=observe, file=file)

    def decode(self, data: bytes, line: int, *, file: str | None = None) -> str:
        """Bytes of one line → text. A UTF-8 byte-order mark on line 1 is dropped. Control
        characters other than tab are refused (they are never data in a POS file)."""
        if line == 1 and self.encoding == "utf-8" and data.startswith(_BOM):
            data = data[3:]
        if data.isascii():  # the common case: every supported encoding agrees with ASCII
            text = data.decode("ascii")
            if text.isprintable():
                return text
        else:
            try:
                text = data.decode(self.encoding)
            except UnicodeDecodeError as exc:
                raise ParseError(f"byte {data[exc.start]:#04x} is not valid {self.encoding}",
                                 file=file, line=line, column=exc.start + 1) from None
        bad = _CONTROL.search(text)
        if bad:
            raise ParseError(f"control character {bad.group()!r} in the line", file=file,
                             line=line, column=bad.start() + 1)
        return text

    def is_blank(self, text: str) -> bool:
        return not text.strip(" \t")

    def parse_line(self, text: str, line: int, *, file: str | None = None) -> Record:
        """One decoded, non-blank line → a Record (:data:`FILLER` for a filler record); raises
        ParseError (file, line, column, field)."""
        if self._filler is not None and self._filler.fullmatch(text.rstrip(" ")):
            return FILLER
        if self.fixed:
            return self._parse_fixed(text, line, file)
        return self._parse_delimited(text, line, file)

    def record_for_line(self, text: str) -> RecordCodec | None:
        """Which record a line is (by its code), or None when the code is unknown."""
        if self.single is not None:
            return self.single
        if self._code_span is not None:
            return self.by_code.get(text[self._code_span[0]:self._code_span[1]])
        try:
            cells = self._split(text, 0, None)
        except ParseError:
            return None
        column = self._code_column or 0
        return self.by_code.get(cells[column]) if column < len(cells) else None

    def _parse_fixed(self, text: str, line: int, file: str | None) -> Record:
        record = self.single
        if record is None:
            assert self._code_span is not None
            start, end = self._code_span
            record = self.by_code.get(text[start:end])
            if record is None:
                raise ParseError(f"unknown record type {text[start:end]!r}", file=file,
                                 line=line, column=start + 1, field="record_type")
        width = record.width
        if len(text) < width:
            text = text.ljust(width)  # trailing blanks are often trimmed by editors and FTP
        elif len(text) > width and text[width:].strip(" "):
            raise ParseError(f"unexpected text after column {width}", file=file, line=line,
                             column=width + 1, field=record.name)
        try:
            values = {name: decode(text[start:end]) for name, start, end, decode in record.slices}
        except FieldError as exc:
            spec = record.by_name[exc.field].spec
            raise ParseError(str(exc), file=file, line=line, column=spec.start,
                             field=exc.field) from None
        return Record(record.name, values)

    def _split(self, text: str, line: int, file: str | None) -> list[str]:
        spec = self.spec
        try:
            if spec.quote is None:
                return text.split(spec.delimiter)
            return next(csv.reader([text], delimiter=spec.delimiter, quotechar=spec.quote,
                                   strict=True, doublequote=True))
        except (csv.Error, StopIteration) as exc:
            raise ParseError(f"cannot split the line: {exc}", file=file, line=line) from None

    def _parse_delimited(self, text: str, line: int, file: str | None) -> Record:
        cells = self._split(text, line, file)
        record, skip = self.single, 0
        if record is None:
            column = self._code_column or 0
            code = cells[column] if column < len(cells) else ""
            record = self.by_code.get(code)
            if record is None:
                raise ParseError(f"unknown record type {code!r}", file=file, line=line,
                                 field="record_type")
            del cells[column]
            skip = 1
        expected = len(record.codecs)
        if len(cells) > expected:
            raise ParseError(f"{len(cells) + skip} columns, the record has {expected + skip}",
                             file=file, line=line, field=record.name)
        cells.extend([""] * (expected - len(cells)))
        try:
            values = {name: decode(cell) for (name, _, _, decode), cell in zip(
                record.slices, cells, strict=True)}
        except FieldError as exc:
            index = [c.name for c in record.codecs].index(exc.field)
            raise ParseError(str(exc), file=file, line=line, field=exc.field,
                             column_index=index + skip) from None
        return Record(record.name, values)

    def field_value(self, record: RecordCodec, text: str, name: str) -> Any:
        """One field of a line known to be ``record`` (used when the rest of it is bad);
        raises FieldError or ParseError."""
        codec = record.by_name[name]
        if self.fixed:
            start = (codec.spec.start or 1) - 1
            return codec.decode(text.ljust(record.width)[start:codec.spec.end])
        cells = self._split(text, 0, None)
        if self.single is None:
            del cells[self._code_column or 0]
        index = record.codecs.index(codec)
        return codec.decode(cells[index] if index < len(cells) else "")

    def check_column_names(self, text: str, line: int, *, file: str | None = None) -> None:
        """The column-header row of a delimited file must name the layout's fields, in order."""
        names = [c.strip().lower() for c in self._split(text, line, file)]
        if names != self.column_names:
            raise FileStructureError(f"column header {names} is not {self.column_names}",
                                     file=file, line=line)


def parse_bytes(layout: Layout, data: bytes, *, file: str | None = None) -> list[Record]:
    """Parse a whole file held in memory, strictly: the first bad line raises ParseError, and
    the file's structure and control totals are checked (FileStructureError/ControlTotalError).
    For large files use ``scan.scan_file`` and ``scan.iter_records``, which stream."""
    from connectors.pos_file.checks import FileCheck  # checks builds on this module

    check = FileCheck(layout, file=file)
    out: list[Record] = []
    for number, _, raw in layout.read_lines(io.BytesIO(data), file=file):
        text = layout.decode(raw, number, file=file)
        if layout.is_blank(text):
            continue
        if layout.spec.header_row and not check.seen_column_header:
            layout.check_column_names(text, number, file=file)
            check.seen_column_header = True
            continue
        record = layout.parse_line(text, number, file=file)
        check.feed(record, number)
        if record is not FILLER:
            out.append(record)
    check.finish()
    return out
