"""File-level checks: structure (header first, batches closed, trailer last, filler at the end,
whole blocks) and control totals.

A :class:`FileCheck` is fed every record of a file in order (good ones with :meth:`feed`, lines
that failed to parse with :meth:`feed_bad`) and :meth:`finish` raises when the file as a whole is
wrong. A batch trailer's controls are checked when it arrives, the file trailer's at the end.
Sums are kept as exact integers in minor units, so no amount ever rounds. A bad detail line
still counts for a ``count`` control (the sender wrote it); for a ``sum`` control its summed
field (and the fields its conditions read) are read on their own, and if even that fails the
sum cannot be verified: the file is refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from connectors.pos_file.errors import ControlTotalError, FileStructureError, ParseError
from connectors.pos_file.fields import FieldError
from connectors.pos_file.layout import ControlSpec
from connectors.pos_file.parser import FILLER, Layout, Record, RecordCodec

__all__ = ["FileCheck", "compile_control"]

Getter = Callable[[str], Any]  # a field of the record at hand, by name


@dataclass(frozen=True)
class _Control:
    """A control compiled for evaluation."""

    spec: ControlSpec
    scope: Literal["file", "batch"]
    target: str  # the (batch) trailer field
    records: frozenset[str]  # records counted, or the summed record
    field: str | None  # the summed field, or the (batch) header field matched
    scale: int
    where: tuple[tuple[str, frozenset[Any]], ...]
    negate: tuple[tuple[str, frozenset[Any]], ...]

    def applies(self, name: str) -> bool:
        return name in self.records

    def delta(self, get: Getter) -> int:
        """What a record adds to this control (0 when its conditions exclude it)."""
        if self.where and not all(get(f) in values for f, values in self.where):
            return 0
        field = self.field
        if field is None or self.spec.count is not None:
            return 1
        amount = _minor(get(field), self.scale, field)
        if self.negate and all(get(f) in values for f, values in self.negate):
            return -amount
        return amount

    def actual(self, total: int) -> Any:
        if self.spec.count is not None:
            return total
        if self.spec.absolute:
            total = abs(total)
        if self.spec.digits is not None:
            total = total % 10 ** self.spec.digits if total >= 0 else \
                -(-total % 10 ** self.spec.digits)
        return Decimal(f"{total}e-{self.scale}")

    def describe(self) -> str:
        spec = self.spec
        if spec.count is not None:
            what = f"count of {'+'.join(spec.count)}"
        elif spec.sum is not None:
            what = f"sum of {spec.sum}"
            if spec.negate:
                what += f" less those where {_conditions(spec.negate)}"
            if spec.absolute:
                what = f"absolute {what}"
            if spec.digits is not None:
                what += f" (rightmost {spec.digits} digits)"
        elif spec.blocks:
            return "number of blocks"
        else:
            return f"{spec.match}"
        return what + (f" where {_conditions(spec.where)}" if spec.where else "")


class FileCheck:
    """Accumulates one file's structure and control totals (constant memory)."""

    def __init__(self, layout: Layout, *, file: str | None = None) -> None:
        self.layout, self.file = layout, file
        self.counts: Counter[str] = Counter()
        self.header: Record | None = None
        self.trailer: Record | None = None
        self.trailer_line: int | None = None
        self.batch: Record | None = None  # the open batch's header
        self.batch_line: int | None = None
        self.batches = 0
        self.records = 0  # records of the layout (filler not included)
        self.filler = 0
        self.filler_line: int | None = None
        self.seen_column_header = False
        self._controls = [compile_control(layout, c) for c in layout.spec.controls]
        self._totals = [0] * len(self._controls)
        self._batched = layout.spec.batched
        self._filler_at_end = layout.spec.filler is not None and layout.spec.filler.where == "end"
        self._applies = {name: tuple(i for i, c in enumerate(self._controls) if c.applies(name))
                         for name in layout.records}  # per record: the controls it feeds

    # -- feeding --------------------------------------------------------------------------------
    def feed(self, record: Record, line: int) -> None:
        """A record that parsed. Raises FileStructureError when it is out of place and
        ControlTotalError when a batch trailer disagrees with its batch."""
        if record is FILLER:
            self._filler(line)
            return
        codec = self.layout.records[record.name]
        self._structure(codec, line)
        self.records += 1
        role = codec.spec.role
        values = record.values
        if role == "header":
            self.header = record
        elif role == "trailer":
            self.trailer, self.trailer_line = record, line
        elif role == "batch_header":
            self._open_batch(record, line)
        elif role == "batch_trailer":
            self._close_batch(record, line)
        else:
            self.counts[record.name] += 1
        if role in ("detail", "batch_header"):
            self._add(record.name, values.__getitem__, line)

    def feed_bad(self, error: ParseError, text: str | None, line: int) -> None:
        """A line that did not parse (``text`` None: it did not even decode)."""
        codec = self.layout.record_for_line(text) if text is not None else None
        if codec is None or codec.spec.role != "detail":
            what = f"the {codec.spec.role.replace('_', ' ')} record" if codec else \
                "a line of unknown type"
            if codec is None and (self.records == 0 and self.layout.header is not None):
                what = "the header record"
            raise FileStructureError(f"{what} is unreadable: {error.message}",
                                     file=self.file, line=line,
                                     field=error.context.get("field")) from error
        self._structure(codec, line)
        self.records += 1
        self.counts[codec.name] += 1

        def get(name: str) -> Any:
            try:
                return self.layout.field_value(codec, text or "", name)
            except (FieldError, ParseError) as exc:
                raise ControlTotalError(f"the control totals over {codec.name}.{name} cannot "
                                        f"be verified: {exc}", file=self.file, line=line,
                                        field=name) from None
        self._add(codec.name, get, line)

    def finish(self) -> None:
        """Raise FileStructureError/ControlTotalError if the file as a whole is wrong."""
        layout = self.layout
        if layout.header is not None and self.header is None:
            raise FileStructureError("no header record", file=self.file)
        if self.batch is not None:
            raise FileStructureError(f"the batch of line {self.batch_line} has no batch "
                                     "trailer: the file is incomplete or truncated",
                                     file=self.file, line=self.batch_line)
        if layout.trailer is not None and self.trailer is None:
            raise FileStructureError("no trailer record: the file is incomplete or truncated",
                                     file=self.file)
        if self.records == 0:
            raise FileStructureError("the file has no records", file=self.file)
        factor = layout.spec.block_factor
        physical = self.records + self.filler
        if factor is not None and physical % factor:
            raise FileStructureError(
                f"{physical} records ({self.filler} of them filler) do not fill whole blocks "
                f"of {factor}: the file is incomplete or not padded", file=self.file)
        for index, control in enumerate(self._controls):
            if control.scope != "file":
                continue
            assert self.trailer is not None and self.trailer_line is not None
            if control.spec.blocks:
                assert factor is not None
                actual: Any = -(-physical // factor)
            elif control.spec.match is not None:
                actual = _source(self.header, control)
            else:
                actual = control.actual(self._totals[index])
            self._compare(control, actual, self.trailer, self.trailer_line)

    # -- structure ------------------------------------------------------------------------------
    def _structure(self, codec: RecordCodec, line: int) -> None:
        role = codec.spec.role
        if self.filler_line is not None and self._filler_at_end:
            raise FileStructureError(f"a record ({codec.name}) follows the filler of line "
                                     f"{self.filler_line}", file=self.file, line=line)
        if self.trailer is not None:
            raise FileStructureError(f"a record follows the trailer of line {self.trailer_line}",
                                     file=self.file, line=line)
        if role == "header" and self.records:
            raise FileStructureError("a header record in the middle of the file",
                                     file=self.file, line=line)
        if role != "header" and self.records == 0 and self.layout.header is not None:
            raise FileStructureError("the file does not start with a header record",
                                     file=self.file, line=line)
        if not self._batched:
            return
        if role == "batch_header" and self.batch is not None:
            raise FileStructureError(f"a batch header before the batch of line "
                                     f"{self.batch_line} was closed by its batch trailer",
                                     file=self.file, line=line)
        if role in ("detail", "batch_trailer") and self.batch is None:
            raise FileStructureError(f"a record ({codec.name}) outside a batch (no batch "
                                     "header before it)", file=self.file, line=line,
                                     field=codec.name)
        if role == "trailer" and self.batch is not None:
            raise FileStructureError(f"the trailer comes before the batch of line "
                                     f"{self.batch_line} was closed", file=self.file, line=line)

    def _filler(self, line: int) -> None:
        spec = self.layout.spec.filler
        assert spec is not None
        if spec.where == "end" and self.layout.trailer is not None and self.trailer is None:
            raise FileStructureError("a filler record before the trailer (filler only pads the "
                                     "end of the file)", file=self.file, line=line)
        self.filler += 1
        if self.filler_line is None:
            self.filler_line = line

    # -- batches and totals ---------------------------------------------------------------------
    def _open_batch(self, record: Record, line: int) -> None:
        self.batch, self.batch_line = record, line
        self.batches += 1
        for index, control in enumerate(self._controls):
            if control.scope == "batch":
                self._totals[index] = 0

    def _close_batch(self, record: Record, line: int) -> None:
        for index, control in enumerate(self._controls):
            if control.scope != "batch":
                continue
            if control.spec.match is not None:
                actual: Any = _source(self.batch, control, self.header)
            else:
                actual = control.actual(self._totals[index])
            self._compare(control, actual, record, line)
        self.batch = self.batch_line = None

    def _add(self, name: str, get: Getter, line: int) -> None:
        for index in self._applies[name]:
            try:
                self._totals[index] += self._controls[index].delta(get)
            except ControlTotalError as exc:
                exc.with_context(file=self.file, line=line)
                raise

    def _compare(self, control: _Control, actual: Any, trailer: Record, line: int) -> None:
        expected = trailer.values[control.target]
        if expected is None or actual != expected:
            where = "batch trailer" if control.scope == "batch" else "trailer"
            column = self.layout.records[trailer.name].by_name[control.target].spec.start
            raise ControlTotalError(f"{where} {control.spec.equals} is {expected}, the "
                                    f"{control.describe()} is {actual}", file=self.file,
                                    line=line, column=column, field=control.target)


def compile_control(layout: Layout, spec: ControlSpec) -> _Control:
    """``spec`` ready to be evaluated over records of ``layout``."""
    target_record, _, target = spec.equals.partition(".")
    scope: Literal["file", "batch"] = (
        "batch" if layout.records[target_record].spec.role == "batch_trailer" else "file")
    records: frozenset[str] = frozenset()
    field: str | None = None
    scale = 0
    if spec.count is not None:
        records = frozenset(spec.count)
    elif spec.sum is not None:
        rname, _, field = spec.sum.partition(".")
        records, scale = frozenset([rname]), layout.records[rname].by_name[field].spec.scale
    elif spec.match is not None:
        field = spec.match
    names = sorted(records)
    return _Control(spec, scope, target, records, field, scale,
                    _condition(layout, names, spec.where), _condition(layout, names, spec.negate))


def _condition(layout: Layout, names: list[str],
               condition: dict[str, list[str | int]] | None) -> tuple[tuple[str, frozenset[Any]],
                                                                    ...]:
    out = []
    for fname, values in (condition or {}).items():
        numeric = layout.records[names[0]].by_name[fname].spec.type == "int"
        out.append((fname, frozenset(int(v) if numeric else v for v in values)))
    return tuple(out)


def _conditions(condition: dict[str, list[str | int]] | None) -> str:
    return " and ".join(f"{f} in {sorted(map(str, v))}" for f, v in (condition or {}).items())


def _source(batch: Record | None, control: _Control, header: Record | None = None) -> Any:
    """The value a ``match`` control repeats: a field of the batch header or file header."""
    assert control.field is not None
    rname, _, fname = control.field.partition(".")
    for record in (batch, header):
        if record is not None and record.name == rname:
            return record.values[fname]
    return None


def _minor(value: Any, scale: int, field: str) -> int:
    """An int, a Decimal with at most ``scale`` places or a text of digits, as an exact integer
    of minor units."""
    if value is None:
        return 0
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise ControlTotalError(f"{field}: {value!r} is not a number, so the control total "
                                    "cannot be verified", field=field)
        return int(value)
    if type(value) is Decimal:  # the common case: a parsed amount, quantized to its scale
        scaled = value.scaleb(scale)  # exact: parsed decimals have at most 28 digits
    elif isinstance(value, int) and not isinstance(value, bool):
        return int(value * 10 ** scale)
    else:
        raise ControlTotalError(f"{field}: expected a number, got {value!r}", field=field)
    whole = int(scaled)
    if whole != scaled:
        raise ControlTotalError(f"{field}: {value} has more than {scale} decimal places",
                                field=field)
    return whole
