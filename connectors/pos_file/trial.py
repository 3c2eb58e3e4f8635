"""Trying a layout on a sample file: every record parsed and checked as the source's first pass
would, stopping at the first problem (``bus layout try``).

:func:`try_layout` streams the file (constant memory, whatever its size), keeps the first
``limit`` records to show, and returns a :class:`Trial`: the records, what was counted, and the
first error with its line, column and the text of that line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from connectors.pos_file.checks import FileCheck
from connectors.pos_file.errors import ParseError
from connectors.pos_file.parser import FILLER, Layout, Record
from connectors.pos_file.windows import json_value

__all__ = ["Trial", "TrialRecord", "try_layout"]


@dataclass(frozen=True)
class TrialRecord:
    line: int
    record: str
    role: str
    values: dict[str, Any]  # as JSON values (decimals as text, dates ISO)


@dataclass
class Trial:
    """What trying a layout on a file found."""

    file: str
    layout: str
    records: list[TrialRecord] = field(default_factory=list)  # the first ``limit``
    counts: Counter[str] = field(default_factory=Counter)  # records read, by name
    filler: int = 0
    blank: int = 0
    batches: int = 0
    controls: int = 0  # control totals the layout checks
    error: ParseError | None = None
    error_text: str | None = None  # the line the error is on, when there is one

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok, "file": self.file, "layout": self.layout,
            "records": [{"line": r.line, "record": r.record, "role": r.role,
                         "values": r.values} for r in self.records],
            "counts": dict(self.counts), "filler": self.filler, "blank": self.blank,
            "batches": self.batches, "controls": self.controls}
        if self.error is not None:
            context = self.error.context
            out["error"] = {"type": self.error.error_type, "message": self.error.message,
                            "line": context.get("line"), "column": context.get("column"),
                            "field": context.get("field"), "text": self.error_text}
        return out


def try_layout(layout: Layout, handle: BinaryIO, *, file: str, limit: int = 20) -> Trial:
    """Parse and check all of ``handle`` with ``layout``; never raises ParseError (the first
    one is the trial's ``error``)."""
    trial = Trial(file=file, layout=layout.spec.name, controls=len(layout.spec.controls))
    check = FileCheck(layout, file=file)
    text: str | None = None
    current = 0
    trailer: tuple[int, str | None] = (0, None)
    try:
        for number, _, raw in layout.read_lines(handle, file=file):
            text, current = None, number
            text = layout.decode(raw, number, file=file)
            if layout.is_blank(text):
                trial.blank += 1
                continue
            if layout.spec.header_row and not check.seen_column_header:
                layout.check_column_names(text, number, file=file)
                check.seen_column_header = True
                continue
            record = layout.parse_line(text, number, file=file)
            check.feed(record, number)
            _note(trial, layout, record, number, limit)
            if layout.trailer is not None and record.name == layout.trailer.name:
                trailer = (number, text)  # the file's controls are checked at the end
        text, current = trailer[1], trailer[0]
        check.finish()
    except ParseError as exc:
        trial.error = exc
        if text is not None and exc.context.get("line") == current:
            trial.error_text = text
    trial.filler, trial.batches = check.filler, check.batches
    return trial


def _note(trial: Trial, layout: Layout, record: Record, line: int, limit: int) -> None:
    if record is FILLER:
        return
    trial.counts[record.name] += 1
    if len(trial.records) < limit:
        role = layout.records[record.name].spec.role
        trial.records.append(TrialRecord(line, record.name, role, {
            name: json_value(value) for name, value in record.values.items()}))
