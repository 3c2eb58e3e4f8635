"""File-level checks: structure (header first, trailer last) and control totals.

A :class:`FileCheck` is fed every record of a file in order (good ones with :meth:`feed`, lines
that failed to parse with :meth:`feed_bad`) and :meth:`finish` raises when the file as a whole is
wrong. Sums are kept as exact integers in minor units, so no amount ever rounds. A bad detail
line still counts for a ``count`` control (the till wrote it); for a ``sum`` control its summed
field is read on its own, and if even that fails the sum cannot be verified: the file is refused.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from connectors.pos_file.errors import ControlTotalError, FileStructureError, ParseError
from connectors.pos_file.fields import FieldError
from connectors.pos_file.parser import Layout, Record, RecordCodec

__all__ = ["FileCheck"]


class FileCheck:
    """Accumulates one file's structure and control totals (constant memory)."""

    def __init__(self, layout: Layout, *, file: str | None = None) -> None:
        self.layout, self.file = layout, file
        self.counts: Counter[str] = Counter()
        self.header: Record | None = None
        self.trailer: Record | None = None
        self.trailer_line: int | None = None
        self.records = 0
        self.seen_column_header = False
        self._sums: list[tuple[str, str, int, int]] = []  # (record, field, scale, control no)
        self._totals: list[int] = []
        for index, control in enumerate(layout.spec.controls):
            self._totals.append(0)
            if control.sum is not None:
                rname, _, fname = control.sum.partition(".")
                spec = layout.records[rname].by_name[fname].spec
                self._sums.append((rname, fname, spec.scale, index))

    def _structure(self, codec: RecordCodec, line: int) -> None:
        role = codec.spec.role
        if self.trailer is not None:
            raise FileStructureError(f"a record follows the trailer of line {self.trailer_line}",
                                     file=self.file, line=line)
        if role == "header" and self.records:
            raise FileStructureError("a header record in the middle of the file",
                                     file=self.file, line=line)
        if role != "header" and self.records == 0 and self.layout.header is not None:
            raise FileStructureError("the file does not start with a header record",
                                     file=self.file, line=line)

    def feed(self, record: Record, line: int) -> None:
        """A record that parsed. Raises FileStructureError when it is out of place."""
        codec = self.layout.records[record.name]
        self._structure(codec, line)
        self.records += 1
        role = codec.spec.role
        if role == "header":
            self.header = record
        elif role == "trailer":
            self.trailer, self.trailer_line = record, line
        else:
            self.counts[record.name] += 1
            for rname, fname, scale, index in self._sums:
                if rname == record.name:
                    self._totals[index] += _minor(record.values[fname], scale)

    def feed_bad(self, error: ParseError, text: str | None, line: int) -> None:
        """A line that did not parse (``text`` None: it did not even decode)."""
        codec = self.layout.record_for_line(text) if text is not None else None
        if codec is None or codec.spec.role != "detail":
            what = f"the {codec.spec.role} record" if codec else "a line of unknown type"
            if codec is None and (self.records == 0 and self.layout.header is not None):
                what = "the header record"
            raise FileStructureError(f"{what} is unreadable: {error.message}",
                                     file=self.file, line=line,
                                     field=error.context.get("field")) from error
        self._structure(codec, line)
        self.records += 1
        self.counts[codec.name] += 1
        for rname, fname, scale, index in self._sums:
            if rname != codec.name:
                continue
            try:
                value = self.layout.field_value(codec, text or "", fname)
            except (FieldError, ParseError) as exc:
                raise ControlTotalError(f"the sum of {rname}.{fname} cannot be verified: "
                                        f"{exc}", file=self.file, line=line,
                                        field=fname) from None
            self._totals[index] += _minor(value, scale)

    def finish(self) -> None:
        """Raise FileStructureError/ControlTotalError if the file as a whole is wrong."""
        layout = self.layout
        if layout.header is not None and self.header is None:
            raise FileStructureError("no header record", file=self.file)
        if layout.trailer is not None and self.trailer is None:
            raise FileStructureError("no trailer record: the file is incomplete or truncated",
                                     file=self.file)
        if self.records == 0:
            raise FileStructureError("the file has no records", file=self.file)
        for index, control in enumerate(layout.spec.controls):
            assert self.trailer is not None
            tfield = control.equals.partition(".")[2]
            expected = self.trailer.values[tfield]
            if control.count is not None:
                actual: Any = sum(self.counts[name] for name in control.count)
                what = f"count of {'+'.join(control.count)}"
            else:
                scale = int(self._sums_scale(index))
                actual = Decimal(f"{self._totals[index]}e-{scale}")
                what = f"sum of {control.sum}"
            if expected is None or actual != expected:
                raise ControlTotalError(f"trailer {control.equals} is {expected}, the {what} "
                                        f"is {actual}", file=self.file, line=self.trailer_line,
                                        field=tfield)

    def _sums_scale(self, index: int) -> int:
        return next(scale for _, _, scale, i in self._sums if i == index)


def _minor(value: Any, scale: int) -> int:
    """An int or a Decimal with at most ``scale`` places, as an exact integer of minor units."""
    if value is None:
        return 0
    if isinstance(value, int):
        return int(value * 10 ** scale)
    return int(Decimal(value).scaleb(scale))  # exact: parsed decimals have at most 28 digits
