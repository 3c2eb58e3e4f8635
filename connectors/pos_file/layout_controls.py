"""Control totals of a layout: what a trailer (or batch trailer) field must equal.

Five kinds, each ``equals: record.field`` of the file ``trailer`` (over the whole file) or of
the ``batch_trailer`` (over the batch it closes):

- ``count: [record, ...]`` — how many of those records (details; batch headers at file level),
- ``sum: record.field`` — the exact sum of a detail field (a number, or a text of digits such as
  a routing number), optionally only over records ``where`` fields hold given values, with the
  records matching ``negate`` subtracted, as an ``absolute`` value, or keeping only the rightmost
  ``digits`` digits (hash totals that overflow their field),
- ``blocks: true`` — how many blocks of ``block_factor`` records the file holds,
- ``match: header.field`` — the value of a (batch) header field, repeated in the trailer.

All of it is checked here at load; :mod:`.checks` evaluates it per file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.pos_file.layout_problem import LayoutProblem

if TYPE_CHECKING:
    from connectors.pos_file.layout import FieldSpec, LayoutSpec, RecordSpec

__all__ = ["ControlSpec", "check_controls"]

Condition = dict[str, list[str | int]]


class ControlSpec(BaseModel):
    """One control total (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: list[str] | None = Field(None, min_length=1, description="record names counted")
    sum: str | None = Field(None, description="'record.field' summed (exactly)")
    blocks: bool = Field(False, description="the number of blocks of block_factor records")
    match: str | None = Field(None, description="'header.field' or 'batch_header.field' the "
                                                "trailer field repeats")
    equals: str = Field(description="trailer or batch trailer field, as 'record.field'")
    where: Condition | None = Field(None, description="only records whose fields hold one of "
                                                      "these values, e.g. {code: ['22', '32']}")
    negate: Condition | None = Field(None, description="sum: records matching this are "
                                                       "subtracted (debits against credits)")
    absolute: bool = Field(False, description="sum: compare the absolute value")
    digits: int | None = Field(None, ge=1, le=28, description="sum: keep only the rightmost "
                                                              "N digits (hash totals)")

    @model_validator(mode="after")
    def _one_kind(self) -> ControlSpec:
        kinds = [self.count is not None, self.sum is not None, self.blocks,
                 self.match is not None]
        if sum(kinds) != 1:
            raise ValueError("a control is exactly one of 'count', 'sum', 'blocks' or 'match'")
        if self.sum is None and (self.negate or self.absolute or self.digits):
            raise ValueError("negate, absolute and digits apply to a 'sum' control")
        if self.where is not None and self.count is None and self.sum is None:
            raise ValueError("where applies to 'count' and 'sum' controls")
        return self


def check_controls(spec: LayoutSpec) -> None:
    """Validate every control of ``spec``; raises LayoutProblem at ``controls[i]``."""
    for index, control in enumerate(spec.controls):
        try:
            _check(spec, control)
        except LayoutProblem as exc:
            raise LayoutProblem(("controls", index, *exc.path), str(exc),
                                hint=exc.hint) from None
        except ValueError as exc:
            raise LayoutProblem(("controls", index), str(exc)) from None


def field_of(spec: LayoutSpec, dotted: str, what: str) -> tuple[str, RecordSpec, FieldSpec]:
    rname, _, fname = dotted.partition(".")
    record = spec.records.get(rname)
    fld = next((f for f in record.fields if f.name == fname), None) if record else None
    if record is None or fld is None:
        raise ValueError(f"control {what} {dotted!r}: no such record.field")
    return rname, record, fld


def _check(spec: LayoutSpec, control: ControlSpec) -> None:
    target_name, target_rec, target = field_of(spec, control.equals, "equals")
    if target_rec.role not in ("trailer", "batch_trailer"):
        raise ValueError(f"control equals {control.equals!r}: must be a field of the trailer "
                         "or the batch trailer")
    batch = target_rec.role == "batch_trailer"
    if control.count is not None:
        allowed = ("detail",) if batch else ("detail", "batch_header")
        for rname in control.count:
            record = spec.records.get(rname)
            if record is None or record.role not in allowed:
                raise ValueError(f"control count {rname!r}: not a "
                                 f"{' or '.join(allowed)} record")
        if target.type != "int":
            raise ValueError(f"control count: {control.equals!r} must be an int field")
        _check_conditions(spec, control, control.count)
    elif control.sum is not None:
        rname, record, summed = field_of(spec, control.sum, "sum")
        if record.role != "detail" or not (summed.numeric or summed.type == "text"):
            raise ValueError(f"control sum {control.sum!r}: must be a number (or digits) field "
                             "of a detail record")
        if not target.numeric:
            raise ValueError(f"control sum: {control.equals!r} must be a number field")
        if target.scale != summed.scale:
            raise ValueError(f"control sum: {control.equals!r} needs scale {summed.scale}, "
                             f"like {control.sum!r}")
        _check_conditions(spec, control, [rname])
    elif control.blocks:
        if spec.block_factor is None:
            raise ValueError("a blocks control needs the layout's block_factor")
        if batch or target.type != "int":
            raise ValueError(f"control blocks: {control.equals!r} must be an int field of the "
                             "trailer")
    else:
        assert control.match is not None
        _, source_rec, source = field_of(spec, control.match, "match")
        pairs = {"header": ("trailer", "batch_trailer"), "batch_header": ("batch_trailer",)}
        if target_rec.role not in pairs.get(source_rec.role, ()):
            raise ValueError(f"control match {control.match!r}: a batch trailer repeats a field "
                             "of the (batch) header, a trailer one of the header")
        if (source.type, source.scale) != (target.type, target.scale):
            raise ValueError(f"control match: {control.match!r} and {target_name}."
                             f"{target.name} differ in type or scale")


def _check_conditions(spec: LayoutSpec, control: ControlSpec, names: list[str]) -> None:
    for key in ("where", "negate"):
        condition: Condition | None = getattr(control, key)
        for fname, values in (condition or {}).items():
            if not values:
                raise LayoutProblem((key, fname), f"{key} {fname!r}: list the values")
            for rname in names:
                fld = next((f for f in spec.records[rname].fields if f.name == fname), None)
                if fld is None:
                    raise LayoutProblem((key,), f"{key}: {rname!r} has no field {fname!r}")
                if fld.type == "text" and not all(isinstance(v, str) for v in values):
                    raise LayoutProblem((key, fname), f"{key} {fname!r}: the field is text; "
                                        "quote the values", hint="e.g. ['22', '32']")
                if fld.type == "int" and not all(
                        isinstance(v, int) or (isinstance(v, str) and v.isdigit()
                                               and v.isascii()) for v in values):
                    raise LayoutProblem((key, fname), f"{key} {fname!r}: the field is an "
                                        "int; list whole numbers")
                if fld.type not in ("text", "int"):
                    raise LayoutProblem((key, fname), f"{key} {fname!r}: conditions compare "
                                        "text or int fields")
