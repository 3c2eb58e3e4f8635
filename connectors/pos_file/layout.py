"""Record layouts of POS, bank and legacy flat files, as written in ``config/layouts/*.yaml``.

A layout is ``fixed`` (each field at a start column with a length) or ``delimited`` (fields in
columns split by a separator, optionally quoted, optionally under a column-header row). A file
holds one kind of record, or several told apart by a record-type code: a file header and
trailer, details, and optionally batches (a batch header, its details, a batch trailer — the
shape of NACHA/ACH files). Fixed records may have a fixed length (``record_length``), with or
without line breaks between them; ``filler`` records (e.g. all-``9`` lines) pad the file to a
whole number of blocks (``block_factor``). Control totals compare trailer fields with counts and
sums of the detail records (:mod:`.layout_controls`).

Positions are 1-based and counted in characters of the decoded line. Validation happens here, at
load: overlapping fields, a code that does not fit, a control total naming an unknown field — all
fail at start-up (``LayoutError`` with the layout file's line), never at message time.
"""

from __future__ import annotations

import itertools
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.pos_file.layout_controls import ControlSpec, check_controls
from connectors.pos_file.layout_problem import LayoutProblem
from integration_bus.connector import BusError, check_type

__all__ = [
    "ControlSpec",
    "FieldSpec",
    "FieldType",
    "FillerSpec",
    "LayoutProblem",
    "LayoutSpec",
    "RecordSpec",
    "RecordTypeSpec",
    "Role",
    "Sign",
]

FieldType = Literal["text", "int", "decimal", "date", "time"]
Sign = Literal["none", "leading", "trailing", "overpunch"]
Role = Literal["header", "batch_header", "detail", "batch_trailer", "trailer"]
Encoding = Literal["utf-8", "utf-8-sig", "cp1252", "latin-1", "ascii"]
SINGLE_BYTE = ("cp1252", "latin-1", "ascii")
_NAME = r"^[a-z][a-z0-9_]*$"
_RESERVED = {"header"}  # not a field name: readers of payloads must not confuse them


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
    scale: int = Field(0, ge=0, le=18, description="decimal: implied decimal places, or with "
                                                   "point: the most places written after '.'")
    point: bool = Field(False, description="decimal: the text carries an explicit '.' (needs a "
                                           "scale: the places it may have)")
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
        if self.point and not self.scale:
            # without a scale no '.' can ever be read: every "12.50" would fail at run time
            raise LayoutProblem((), f"field {self.name!r}: point: true needs a scale (the "
                                "number of places after the '.')",
                                hint="add e.g. scale: 2 (money) or scale: 3 (weights); for "
                                     "whole numbers drop point: true")
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


class FillerSpec(_Spec):
    """Records that only pad a file (NACHA pads to a block of 10 with lines of 94 '9's): read,
    counted, never parsed or published."""

    pattern: str = Field(min_length=1, description="regular expression the whole record "
                                                   "(trailing blanks removed) matches, e.g. '9+'")
    where: Literal["end", "anywhere"] = Field(
        "end", description="end: only after the trailer (or the last record); anywhere")

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"filler pattern is not a regular expression: {exc}") from None
        if compiled.fullmatch(""):
            raise ValueError("filler pattern matches an empty record; blank lines are skipped "
                             "anyway — describe what a filler record holds, e.g. '9+'")
        return value


class RecordSpec(_Spec):
    code: str | None = Field(None, min_length=1, description="record-type code")
    role: Role = Field("detail", description="header/trailer: once per file, first/last; "
                                             "batch_header/batch_trailer: around each batch of "
                                             "details; detail: published")
    type: str | None = Field(None, description="message type published per record (details)")
    fields: list[FieldSpec] = Field(min_length=1)
    from_header: list[str] = Field(default_factory=list,
                                   description="header fields copied into each detail payload")
    from_batch: list[str] = Field(default_factory=list, description="batch header fields "
                                                                    "copied into each detail")

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
        if self.role != "detail" and (self.type is not None or self.from_header or
                                      self.from_batch):
            raise ValueError(f"a {self.role} record has no 'type', 'from_header' or "
                             "'from_batch'")
        inherited = [*self.from_header, *self.from_batch]
        clash = sorted({n for n in inherited if n in names or inherited.count(n) > 1})
        if clash:
            raise ValueError(f"inherited field {clash[0]!r} is also a field of this record "
                             "or inherited twice")
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
    record_length: int | None = Field(
        None, ge=1, le=65_536, description="fixed: every record is this many bytes; records "
                                           "may follow each other without line breaks")
    filler: FillerSpec | None = None
    block_factor: int | None = Field(
        None, ge=2, le=10_000, description="records (filler included) come in whole blocks of "
                                           "this many; the last one is padded with filler")
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
        for role in ("header", "trailer", "batch_header", "batch_trailer"):
            if roles.count(role) > 1:
                raise ValueError(f"a layout has at most one {role} record")
        if ("batch_header" in roles) != ("batch_trailer" in roles):
            raise ValueError("batches need both a batch_header and a batch_trailer record")
        if "detail" not in roles:
            raise ValueError("a layout needs at least one detail record")
        if self.format == "fixed":
            self._check_fixed()
        else:
            self._check_delimited()
        self._check_blocks()
        self._check_codes()
        self._check_inherited("from_header", "header")
        self._check_inherited("from_batch", "batch_header")
        check_controls(self)
        return self

    def record_of(self, role: str) -> tuple[str, RecordSpec] | None:
        return next(((n, r) for n, r in self.records.items() if r.role == role), None)

    @property
    def batched(self) -> bool:
        return self.record_of("batch_header") is not None

    def _check_fixed(self) -> None:
        if self.header_row:
            raise ValueError("header_row applies to delimited layouts")
        code = self.record_type
        if code is not None and (code.start is None or code.length is None or code.column):
            raise ValueError("record_type of a fixed layout needs start and length")
        if self.record_length is not None and self.encoding not in SINGLE_BYTE:
            raise LayoutProblem(("record_length",), f"record_length counts bytes: it needs a "
                                f"single-byte encoding, not {self.encoding}",
                                hint=f"use one of {', '.join(SINGLE_BYTE)}")
        for rname, record in self.records.items():
            spans: list[tuple[int, int, str]] = []
            if code is not None and code.start is not None and code.length is not None:
                spans.append((code.start - 1, code.start - 1 + code.length, "record type code"))
            for index, fld in enumerate(record.fields):
                if fld.start is None or fld.length is None:
                    raise LayoutProblem(("records", rname, "fields", index),
                                        f"{rname}.{fld.name}: fixed fields need start and "
                                        "length")
                spans.append((fld.start - 1, fld.end, fld.name))
            spans.sort()
            for (_, end_a, name_a), (start_b, _, name_b) in itertools.pairwise(spans):
                if start_b < end_a:
                    raise LayoutProblem(("records", rname, "fields"),
                                        f"{rname}: {name_a} and {name_b} overlap "
                                        f"(column {start_b + 1})")
            width = spans[-1][1] if spans else 0
            if self.record_length is not None and width > self.record_length:
                raise LayoutProblem(("records", rname, "fields"),
                                    f"{rname}: {spans[-1][2]} ends at column {width}, past "
                                    f"the record length {self.record_length}")

    def _check_delimited(self) -> None:
        if self.quote is not None and self.quote == self.delimiter:
            raise ValueError("quote and delimiter must differ")
        if self.delimiter in "\r\n" or (self.quote is not None and self.quote in "\r\n"):
            raise ValueError("delimiter and quote cannot be line breaks")
        if self.record_length is not None:
            raise LayoutProblem(("record_length",), "record_length applies to fixed layouts")
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

    def _check_blocks(self) -> None:
        if self.block_factor is not None and self.filler is None:
            raise LayoutProblem(("block_factor",), "block_factor needs a filler record to pad "
                                "the last block", hint="e.g. filler: {pattern: '9+'}")
        if self.header_row and self.filler is not None:
            raise LayoutProblem(("filler",), "filler records need a record layout, not a "
                                "column-header row")

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

    def _check_inherited(self, key: Literal["from_header", "from_batch"], role: str) -> None:
        source = self.record_of(role)
        known = {f.name for f in source[1].fields} if source else set()
        for name, record in self.records.items():
            for wanted in getattr(record, key):
                if wanted not in known:
                    raise LayoutProblem(("records", name, key),
                                        f"record {name!r}: {key} {wanted!r} is not a {role} "
                                        "field")
