"""Record layouts of POS flat files, as written in ``config/layouts/*.yaml`` (the spec).

A layout is ``fixed`` (each field at a start column with a length) or ``delimited`` (fields in
columns split by a separator, optionally quoted, optionally under a column-header row). A file
holds one kind of record, or several told apart by a record-type code (header, details,
trailer). Control totals compare trailer fields with counts and sums of the detail records.

Positions are 1-based and counted in characters of the decoded line. Validation happens here, at
load: overlapping fields, a code that does not fit, a control total naming an unknown field — all
fail at start-up (``LayoutError`` with the layout file's line), never at message time.
"""

from __future__ import annotations

import itertools
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from integration_bus.connector import BusError, check_type

__all__ = [
    "ControlSpec",
    "FieldSpec",
    "FieldType",
    "LayoutProblem",
    "LayoutSpec",
    "RecordSpec",
    "RecordTypeSpec",
    "Sign",
]

FieldType = Literal["text", "int", "decimal", "date", "time"]
Sign = Literal["none", "leading", "trailing", "overpunch"]
Encoding = Literal["utf-8", "utf-8-sig", "cp1252", "latin-1", "ascii"]
_NAME = r"^[a-z][a-z0-9_]*$"
_RESERVED = {"header"}  # not a field name: readers of payloads must not confuse them


class LayoutProblem(ValueError):
    """A layout-level problem that knows where in the file it is (``path`` into the YAML)."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Spec):
    """One field. ``start``/``length`` for fixed layouts only; columns follow list order."""

    name: str = Field(pattern=_NAME)
    type: FieldType = "text"
    start: int | None = Field(None, ge=1, description="first column, 1-based (fixed only)")
    length: int | None = Field(None, ge=1, le=4096, description="width in characters (fixed)")
    required: bool = Field(True, description="a blank value is an error (else it reads as null)")
    align: Literal["left", "right"] | None = Field(
        None, description="where the value sits in its width; default text left, numbers right")
    pad: str = Field(" ", min_length=1, max_length=1, description="fill character (fixed)")
    scale: int = Field(0, ge=0, le=18, description="decimal: implied decimal places")
    point: bool = Field(False, description="decimal: the text carries an explicit '.'")
    sign: Sign = Field("none", description="int/decimal: how a sign is written; 'overpunch' is "
                                           "signed zoned decimal ({=+0, A-I=+1..9, }=-0, J-R)")
    format: str | None = Field(None, description="date/time: strftime pattern "
                                                 "(default %Y%m%d / %H%M%S)")
    publish: bool = Field(True, description="false: read and checked (e.g. an amount the "
                                            "trailer sums) but left out of the payload")

    @property
    def numeric(self) -> bool:
        return self.type in ("int", "decimal")

    @property
    def alignment(self) -> Literal["left", "right"]:
        return self.align or ("right" if self.numeric else "left")

    @property
    def end(self) -> int:
        """One past the last column (0-based exclusive end of the slice)."""
        assert self.start is not None and self.length is not None
        return self.start - 1 + self.length

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.type != "decimal" and (self.scale or self.point):
            raise ValueError(f"field {self.name!r}: scale/point apply to decimals only")
        if not self.numeric and self.sign != "none":
            raise ValueError(f"field {self.name!r}: sign applies to int/decimal only")
        if self.format is not None and self.type not in ("date", "time"):
            raise ValueError(f"field {self.name!r}: format applies to date/time only")
        if self.numeric and self.pad not in (" ", "0"):
            raise ValueError(f"field {self.name!r}: numbers pad with ' ' or '0'")
        if self.pad in "\r\n\t" or not self.pad.isprintable():
            raise ValueError(f"field {self.name!r}: pad must be a printable character")
        if self.sign == "overpunch" and self.pad != "0" and self.alignment == "left":
            raise ValueError(f"field {self.name!r}: overpunch numbers are right-aligned")
        if self.length is not None and self.numeric and self.length < self.min_length:
            raise ValueError(f"field {self.name!r}: {self.length} characters cannot hold a "
                             f"value (at least {self.min_length} needed)")
        return self

    @property
    def min_length(self) -> int:
        """The narrowest width that holds a number: '0', or '0.00' with a point, plus a sign
        character when the sign is written apart."""
        digits = 1 + (self.scale + 1 if self.point and self.scale else 0)
        return digits + (1 if self.sign in ("leading", "trailing") else 0)


class RecordTypeSpec(_Spec):
    """Where the record-type code sits: ``start``/``length`` (fixed) or ``column`` (delimited)."""

    start: int | None = Field(None, ge=1)
    length: int | None = Field(None, ge=1, le=16)
    column: int | None = Field(None, ge=0, description="0-based column (delimited)")


class RecordSpec(_Spec):
    code: str | None = Field(None, min_length=1, description="record-type code")
    role: Literal["header", "detail", "trailer"] = "detail"
    type: str | None = Field(None, description="message type published per record (details)")
    fields: list[FieldSpec] = Field(min_length=1)
    from_header: list[str] = Field(default_factory=list,
                                   description="header fields copied into each detail payload")

    @field_validator("type")
    @classmethod
    def _message_type(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_type(value)
            except BusError as exc:
                raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _unique(self) -> RecordSpec:
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"field names repeat: {', '.join(dupes)}")
        reserved = sorted(set(names) & _RESERVED)
        if reserved:
            raise ValueError(f"{reserved[0]!r} is reserved; rename the field")
        if self.role == "detail" and self.type is None:
            raise ValueError("a detail record needs a message 'type' (e.g. pos.sale_line)")
        if self.role != "detail" and (self.type is not None or self.from_header):
            raise ValueError(f"a {self.role} record has no 'type' or 'from_header'")
        clash = sorted(set(self.from_header) & set(names))
        if clash:
            raise ValueError(f"from_header field {clash[0]!r} is also a field of this record")
        return self


class ControlSpec(_Spec):
    """``count`` (detail record names) or ``sum`` (``record.field``) ``equals`` a trailer field."""

    count: list[str] | None = Field(None, min_length=1)
    sum: str | None = None
    equals: str = Field(description="trailer field, as 'record.field'")

    @model_validator(mode="after")
    def _one_kind(self) -> ControlSpec:
        if (self.count is None) == (self.sum is None):
            raise ValueError("a control is either 'count' or 'sum'")
        return self


class LayoutSpec(_Spec):
    name: str = Field(pattern=_NAME)
    description: str = ""
    format: Literal["fixed", "delimited"]
    encoding: Encoding = Field("utf-8", description="utf-8 also accepts a byte-order mark")
    line_ending: Literal["crlf", "lf", "cr"] = Field(
        "crlf", description="written by the sink; the parser accepts any line ending")
    delimiter: str = Field(",", min_length=1, max_length=1)
    quote: str | None = Field('"', min_length=1, max_length=1)
    header_row: bool = Field(False, description="delimited: the first line names the columns")
    record_type: RecordTypeSpec | None = None
    records: dict[str, RecordSpec] = Field(min_length=1)
    controls: list[ControlSpec] = Field(default_factory=list)
    max_line_length: int = Field(65_536, ge=16, le=1 << 24, description="bytes per line")

    @field_validator("records")
    @classmethod
    def _record_names(cls, value: dict[str, RecordSpec]) -> dict[str, RecordSpec]:
        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"record name {name!r}: use lower-case letters, digits and _")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LayoutSpec:
        roles = [r.role for r in self.records.values()]
        if roles.count("header") > 1 or roles.count("trailer") > 1:
            raise ValueError("a layout has at most one header and one trailer record")
        if "detail" not in roles:
            raise ValueError("a layout needs at least one detail record")
        if self.format == "fixed":
            self._check_fixed()
        else:
            self._check_delimited()
        self._check_codes()
        self._check_from_header()
        self._check_controls()
        return self

    def record_of(self, role: str) -> tuple[str, RecordSpec] | None:
        return next(((n, r) for n, r in self.records.items() if r.role == role), None)

    def _check_fixed(self) -> None:
        if self.header_row:
            raise ValueError("header_row applies to delimited layouts")
        code = self.record_type
        if code is not None and (code.start is None or code.length is None or code.column):
            raise ValueError("record_type of a fixed layout needs start and length")
        for rname, record in self.records.items():
            spans: list[tuple[int, int, str]] = []
            if code is not None and code.start is not None and code.length is not None:
                spans.append((code.start - 1, code.start - 1 + code.length, "record type code"))
            for index, fld in enumerate(record.fields):
                if fld.start is None or fld.length is None:
                    raise LayoutProblem(("records", rname, "fields", index),
                                       f"{rname}.{fld.name}: fixed fields need start and length")
                spans.append((fld.start - 1, fld.end, fld.name))
            spans.sort()
            for (_, end_a, name_a), (start_b, _, name_b) in itertools.pairwise(spans):
                if start_b < end_a:
                    raise LayoutProblem(("records", rname, "fields"),
                                        f"{rname}: {name_a} and {name_b} overlap "
                                     f"(column {start_b + 1})")

    def _check_delimited(self) -> None:
        if self.quote is not None and self.quote == self.delimiter:
            raise ValueError("quote and delimiter must differ")
        if self.delimiter in "\r\n" or (self.quote is not None and self.quote in "\r\n"):
            raise ValueError("delimiter and quote cannot be line breaks")
        code = self.record_type
        if code is not None and (code.column is None or code.start or code.length):
            raise ValueError("record_type of a delimited layout needs a column")
        if self.header_row and code is not None:
            raise ValueError("header_row needs a single-record layout (no record_type)")
        for rname, record in self.records.items():
            for index, fld in enumerate(record.fields):
                if fld.start is not None or fld.length is not None:
                    raise LayoutProblem(("records", rname, "fields", index),
                                       f"{rname}.{fld.name}: delimited fields have no "
                                       "start/length")

    def _check_codes(self) -> None:
        code = self.record_type
        if code is None:
            if len(self.records) != 1:
                raise ValueError("several records need a record_type telling them apart")
            if next(iter(self.records.values())).code is not None:
                raise ValueError("a record 'code' needs a layout 'record_type'")
            return
        seen: dict[str, str] = {}
        for name, record in self.records.items():
            if record.code is None:
                raise LayoutProblem(("records", name), f"record {name!r} needs a 'code'")
            if code.length is not None and len(record.code) != code.length:
                raise LayoutProblem(("records", name, "code"),
                                    f"record {name!r}: code {record.code!r} is not "
                                 f"{code.length} characters")
            if record.code != record.code.strip() or not record.code.isprintable():
                raise LayoutProblem(("records", name, "code"),
                                    f"record {name!r}: code must be printable, without edge "
                                    "spaces")
            if record.code in seen:
                raise LayoutProblem(("records", name, "code"),
                                   f"records {seen[record.code]!r} and {name!r} share a code")
            seen[record.code] = name

    def _check_from_header(self) -> None:
        header = self.record_of("header")
        header_fields = {f.name for f in header[1].fields} if header else set()
        for name, record in self.records.items():
            for wanted in record.from_header:
                if wanted not in header_fields:
                    raise LayoutProblem(("records", name, "from_header"),
                                        f"record {name!r}: from_header {wanted!r} is not a "
                                        "header field")

    def _field(self, dotted: str, what: str) -> tuple[str, RecordSpec, FieldSpec]:
        rname, _, fname = dotted.partition(".")
        record = self.records.get(rname)
        fld = next((f for f in record.fields if f.name == fname), None) if record else None
        if record is None or fld is None:
            raise ValueError(f"control {what} {dotted!r}: no such record.field")
        return rname, record, fld

    def _check_controls(self) -> None:
        for index, control in enumerate(self.controls):
            try:
                self._check_control(control)
            except ValueError as exc:
                raise LayoutProblem(("controls", index), str(exc)) from None

    def _check_control(self, control: ControlSpec) -> None:
        _, target_rec, target = self._field(control.equals, "equals")
        if target_rec.role != "trailer":
            raise ValueError(f"control equals {control.equals!r}: must be a trailer field")
        if control.count is not None:
            for rname in control.count:
                if self.records.get(rname) is None or self.records[rname].role != "detail":
                    raise ValueError(f"control count {rname!r}: not a detail record")
            if target.type != "int":
                raise ValueError(f"control count: {control.equals!r} must be an int field")
        else:
            assert control.sum is not None
            _, rec, summed = self._field(control.sum, "sum")
            if rec.role != "detail" or not summed.numeric:
                raise ValueError(f"control sum {control.sum!r}: must be a number field of "
                                 "a detail record")
            if not target.numeric:
                raise ValueError(f"control sum: {control.equals!r} must be a number field")
            if target.scale != summed.scale:
                raise ValueError(f"control sum: {control.equals!r} needs scale "
                                 f"{summed.scale}, like {control.sum!r}")
