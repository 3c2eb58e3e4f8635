"""Streaming passes over a claimed file: :func:`scan_file` (hash, validate, control totals) and
:func:`iter_records` (records from a byte offset, for publishing).

The scan reads the whole file once with constant memory and never raises for bad content: it
returns a :class:`Scan` whose ``error`` says why the file must be quarantined (structure, control
totals, too many bad records, or any bad record when the file is all-or-nothing). The hash always
covers every byte, so even a refused file has an identity in the ledger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from connectors.pos_file.checks import FileCheck
from connectors.pos_file.errors import FileStructureError, ParseError
from connectors.pos_file.lines import CHUNK_BYTES
from connectors.pos_file.parser import Layout, Record

__all__ = ["Item", "Scan", "iter_records", "scan_file"]

MAX_LISTED_ERRORS = 20  # bad lines named in a quarantine reason file


@dataclass
class Scan:
    """What the first pass learned about a file."""

    sha256: str
    size: int
    lines: int = 0
    details: int = 0
    bad: int = 0
    header: Record | None = None
    errors: list[str] = field(default_factory=list)  # the first bad lines, for people
    error: ParseError | None = None  # set: the file is quarantined, nothing is published


@dataclass(frozen=True, slots=True)
class Item:
    """A non-blank line in pass two: where it is, its raw bytes, and its record or error."""

    line: int
    end: int  # byte offset after the line: where a resume starts
    raw: bytes
    record: Record | None
    error: ParseError | None


def scan_file(handle: BinaryIO, layout: Layout, *, file: str, max_bad: int,
              all_or_nothing: bool, chunk_bytes: int = CHUNK_BYTES) -> Scan:
    """Hash and validate all of ``handle``. ``max_bad``: more bad detail records than this
    quarantines the file; ``all_or_nothing``: any bad record does."""
    digest = hashlib.sha256()
    check = FileCheck(layout, file=file)
    scan = Scan(sha256="", size=0)
    try:
        for number, _, raw in layout.read_lines(handle, observe=digest.update, file=file,
                                                chunk_bytes=chunk_bytes):
            scan.lines = number
            text: str | None = None
            try:
                text = layout.decode(raw, number, file=file)
                if layout.is_blank(text):
                    continue
                if layout.spec.header_row and not check.seen_column_header:
                    layout.check_column_names(text, number, file=file)
                    check.seen_column_header = True
                    continue
                record = layout.parse_line(text, number, file=file)
            except FileStructureError:
                raise
            except ParseError as exc:
                check.feed_bad(exc, text, number)
                _note_bad(scan, exc, max_bad=max_bad, all_or_nothing=all_or_nothing, file=file)
                continue
            check.feed(record, number)
        check.finish()
    except ParseError as exc:
        scan.error = exc
        while chunk := handle.read(chunk_bytes):  # the identity covers every byte
            digest.update(chunk)
    scan.header = check.header
    scan.details = sum(check.counts.values())
    scan.sha256 = digest.hexdigest()
    scan.size = handle.tell()
    return scan


def _note_bad(scan: Scan, error: ParseError, *, max_bad: int, all_or_nothing: bool,
              file: str) -> None:
    scan.bad += 1
    if len(scan.errors) < MAX_LISTED_ERRORS:
        scan.errors.append(str(error))
    if all_or_nothing:
        raise FileStructureError(f"a bad record and the file is all-or-nothing: {error}",
                                 file=file, line=error.context.get("line"))
    if scan.bad > max_bad:
        raise FileStructureError(f"more than {max_bad} bad records (is this the right layout?)",
                                 file=file, line=error.context.get("line"))


def iter_records(handle: BinaryIO, layout: Layout, *, file: str, offset: int = 0,
                 line: int = 0) -> Iterator[Item]:
    """Every non-blank record line from byte ``offset`` (after line ``line``), parsed."""
    header_row_pending = layout.spec.header_row and offset == 0
    for number, end, raw in layout.read_lines(handle, offset=offset, number=line, file=file):
        try:
            text = layout.decode(raw, number, file=file)
            if layout.is_blank(text):
                continue
            if header_row_pending:
                header_row_pending = False
                continue
            yield Item(number, end, raw, layout.parse_line(text, number, file=file), None)
        except ParseError as exc:
            yield Item(number, end, raw, None, exc)
