"""Field codecs: text of one field ⇄ its typed value, compiled once per field of a layout.

Values are ``str`` (text), ``int``, ``Decimal`` (decimal, always quantized to the field's scale,
never a float), ``datetime.date`` and ``datetime.time``; ``None`` is a blank optional field.
``decode`` raises :class:`FieldError` (the parser adds file, line and column); ``encode`` raises
:class:`RenderError`. For every value ``encode`` accepts, ``decode(encode(v)) == v``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.pos_file.errors import RenderError
from connectors.pos_file.layout import FieldSpec

__all__ = ["FieldCodec", "FieldError", "compile_field"]

# Signed zoned decimal ("overpunch"): the last digit also carries the sign.
_OVERPUNCH_POS = "{ABCDEFGHI"
_OVERPUNCH_NEG = "}JKLMNOPQR"
_OVERPUNCH_NEG_ASCII = "pqrstuvwxy"  # the ASCII-zoned convention some tills use for negatives
_PUNCH: dict[str, tuple[int, int]] = {
    **{c: (1, d) for d, c in enumerate(_OVERPUNCH_POS)},
    **{c: (-1, d) for d, c in enumerate(_OVERPUNCH_NEG)},
    **{c: (-1, d) for d, c in enumerate(_OVERPUNCH_NEG_ASCII)},
}
_POINT_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_MAX_DIGITS = 28  # Decimal's default precision: beyond it arithmetic would round
_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class FieldError(ValueError):
    """A field's text is not a valid value (message says why; the parser adds the location)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class FieldCodec:
    """A compiled field: ``decode(text)`` and ``encode(value)``."""

    spec: FieldSpec
    decode: Callable[[str], Any]
    encode: Callable[[Any], str]

    @property
    def name(self) -> str:
        return self.spec.name


def compile_field(spec: FieldSpec, *, fixed: bool) -> FieldCodec:
    """Build the codec for ``spec``; ``fixed`` selects width/padding rules. Decoders are flat
    closures (one call per field) because they run for every field of every line."""
    if spec.numeric:
        decode, raw_encode = _number_codec(spec)
    elif spec.type == "text":
        decode, raw_encode = _text_decoder(spec, fixed), _text_encoder(spec, fixed)
    else:
        decode, raw_encode = _datetime_codec(spec)
    return FieldCodec(spec, decode, _fitting(spec, raw_encode, fixed))


def _blank(spec: FieldSpec) -> Callable[[], None]:
    """What a blank field reads as: None, or a FieldError when the field is required."""
    name, required = spec.name, spec.required

    def blank() -> None:
        if required:
            raise FieldError(f"{name} is blank but required", name)
        return None
    return blank


def _fitting(spec: FieldSpec, encode: Callable[[Any], str],
             fixed: bool) -> Callable[[Any], str]:
    """Wrap ``encode``: None → blank, then pad to the width (fixed) and check it fits."""
    width, right, pad = spec.length, spec.alignment == "right", spec.pad

    def encoded(value: Any) -> str:
        if value is None or value == "":
            if spec.required:
                raise RenderError(f"{spec.name} is required", field=spec.name)
            return " " * width if fixed and width else ""
        text = encode(value)
        if not fixed or width is None:
            return text
        if len(text) > width:
            raise RenderError(f"{spec.name}: {text!r} does not fit in {width} characters",
                              field=spec.name)
        if spec.numeric and pad == "0" and text[:1] in "+-":
            return text[0] + text[1:].rjust(width - 1, "0")
        return text.rjust(width, pad) if right else text.ljust(width, pad)
    return encoded


# -- text ------------------------------------------------------------------------------------
def _text_decoder(spec: FieldSpec, fixed: bool) -> Callable[[str], Any]:
    """Fixed: strip the pad from the side away from the alignment; what is left, if only
    spaces (a blank, or a line whose trailing blanks were trimmed), reads as blank."""
    blank, pad = _blank(spec), spec.pad
    if not fixed:
        return lambda text: text if text else blank()
    left = spec.alignment == "left"
    if pad == " ":
        def spaced(text: str) -> Any:
            value = text.rstrip(" ") if left else text.lstrip(" ")
            return value if value else blank()
        return spaced

    def padded(text: str) -> Any:
        value = text.rstrip(pad) if left else text.lstrip(pad)
        return value if value.strip(" ") else blank()
    return padded


def _text_encoder(spec: FieldSpec, fixed: bool) -> Callable[[Any], str]:
    def encode(value: Any) -> str:
        if not isinstance(value, str):
            raise RenderError(f"{spec.name}: expected text, got {type(value).__name__}",
                              field=spec.name)
        bad = _BAD_TEXT.search(value)
        if bad:
            raise RenderError(f"{spec.name}: control character {bad.group()!r} in text",
                              field=spec.name)
        if fixed:
            edge = value[-1] if spec.alignment == "left" else value[0]
            if edge == spec.pad or value.strip(" ") == "":
                raise RenderError(f"{spec.name}: {value!r} would lose its padding-side "
                                  f"{spec.pad!r} characters", field=spec.name)
        return value
    return encode


# -- numbers ----------------------------------------------------------------------------------
def _number_codec(spec: FieldSpec) -> tuple[Callable[[str], Any], Callable[[Any], str]]:
    scale = spec.scale if spec.type == "decimal" else 0
    quantum = Decimal(1).scaleb(-scale)
    exponent = f"e-{scale}"
    sign_style, name, blank = spec.sign, spec.name, _blank(spec)
    is_int, point = spec.type == "int", spec.point

    def not_a_number(text: str) -> FieldError:
        return FieldError(f"{name}: {text!r} is not a number", name)

    def magnitude(digits: str) -> Any:
        if point:
            if not _POINT_NUMBER.fullmatch(digits):
                raise not_a_number(digits)
            whole = digits.index(".") if "." in digits else len(digits)
            if whole + scale > _MAX_DIGITS:
                raise FieldError(f"{name}: more than {_MAX_DIGITS} digits", name)
            places = len(digits) - whole - 1 if whole < len(digits) else 0
            if places > scale:
                raise FieldError(f"{name}: {digits!r} has more than {scale} decimal places",
                                 name)
            return Decimal(digits).quantize(quantum)
        if not (digits.isdigit() and digits.isascii()):
            raise not_a_number(digits)
        if len(digits) > _MAX_DIGITS:
            raise FieldError(f"{name}: more than {_MAX_DIGITS} digits", name)
        return int(digits) if is_int else Decimal(digits + exponent)  # exact, no rounding

    def parse(text: str) -> Any:
        digits = text.strip(" ")
        if not digits:
            return blank()
        negative = False
        if sign_style == "leading" and digits[0] in "+-":
            negative, digits = digits[0] == "-", digits[1:]
        elif sign_style == "trailing" and digits[-1] in "+-":
            negative, digits = digits[-1] == "-", digits[:-1]
        elif sign_style == "overpunch" and digits[-1] in _PUNCH:
            sign, digit = _PUNCH[digits[-1]]
            negative, digits = sign < 0, digits[:-1] + str(digit)
        value = magnitude(digits)
        if not negative or not value:
            return value
        return -value if is_int else value.copy_negate()

    def parse_unsigned(text: str) -> Any:
        digits = text.strip(" ")
        return magnitude(digits) if digits else blank()

    def fmt(value: Any) -> str:
        if spec.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise RenderError(f"{name}: expected an integer, got {value!r}", field=name)
            negative, body = value < 0, str(abs(value))
        else:
            if not isinstance(value, Decimal) or not value.is_finite():
                raise RenderError(f"{name}: expected a Decimal, got {value!r}", field=name)
            try:
                exact = value.quantize(quantum)
            except InvalidOperation as exc:
                raise RenderError(f"{name}: {value} is too large", field=name) from exc
            if exact != value:
                raise RenderError(f"{name}: {value} has more than {scale} decimal places",
                                  field=name)
            negative = exact < 0
            body = (format(exact.copy_abs(), "f") if spec.point
                    else str(int(exact.copy_abs().scaleb(scale))))
        if not negative:
            return body
        if sign_style == "none":
            raise RenderError(f"{name}: {value} is negative but the field has no sign",
                              field=name)
        if sign_style == "leading":
            return "-" + body
        if sign_style == "trailing":
            return body + "-"
        return body[:-1] + _OVERPUNCH_NEG[int(body[-1])]
    return (parse if sign_style != "none" else parse_unsigned), fmt


# -- dates and times --------------------------------------------------------------------------
def _datetime_codec(spec: FieldSpec) -> tuple[Callable[[str], Any], Callable[[Any], str]]:
    is_date = spec.type == "date"
    pattern = spec.format or ("%Y%m%d" if is_date else "%H%M%S")
    name, blank = spec.name, _blank(spec)

    def parse(text: str) -> Any:
        text = text.strip(" ")
        if not text:
            return blank()
        if pattern == "%Y%m%d" and len(text) == 8 and text.isascii() and text.isdigit():
            try:  # the common case, ten times faster than strptime
                return date(int(text[:4]), int(text[4:6]), int(text[6:]))
            except ValueError as exc:
                raise FieldError(f"{name}: {text!r} is not a date: {exc}", name) from None
        try:
            moment = datetime.strptime(text, pattern)
        except ValueError as exc:
            raise FieldError(f"{name}: {text!r} does not match {pattern}: {exc}",
                             name) from None
        return moment.date() if is_date else moment.time()

    def fmt(value: Any) -> str:
        wanted = date if is_date else time
        if not isinstance(value, wanted) or (is_date and isinstance(value, datetime)):
            raise RenderError(f"{name}: expected a {wanted.__name__}, got {value!r}",
                              field=name)
        text = value.strftime(pattern)
        if parse(text) != value:
            raise RenderError(f"{name}: {value} cannot be written as {pattern} and read back",
                              field=name)
        return text
    return parse, fmt
