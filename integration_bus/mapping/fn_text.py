"""Text functions: case, trimming, slicing, padding, splitting, joining.

Text functions accept numbers and booleans too (converted with their canonical text), so
``store_no | pad_left(4, '0')`` works on ``7`` as well as on ``"7"``.
"""

from __future__ import annotations

from typing import Any

from integration_bus.errors import MappingError
from integration_bus.mapping.functions import (
    UNKNOWN,
    BindContext,
    BindError,
    FunctionSpec,
    built_in,
)
from integration_bus.mapping.values import DECIMAL_CONTEXT, to_decimal, to_text, type_name

__all__ = ["SPECS"]

MAX_PAD = 1000


def _upper(value: Any) -> str:
    return to_text(value).upper()


def _lower(value: Any) -> str:
    return to_text(value).lower()


def _trim(value: Any) -> str:
    return to_text(value).strip()


def _ltrim(value: Any) -> str:
    return to_text(value).lstrip()


def _rtrim(value: Any) -> str:
    return to_text(value).rstrip()


def _length(value: Any) -> int:
    if isinstance(value, list | dict):
        return len(value)
    return len(to_text(value))


def _whole(value: Any, what: str) -> int:
    number = to_decimal(value, what)
    if number != number.to_integral_value(None, DECIMAL_CONTEXT) or \
            DECIMAL_CONTEXT.abs(number) > 10**9:
        raise MappingError(f"{what} must be a whole number, got {value}")
    return int(number)


def _substring(value: Any, start: Any, length: Any = None) -> str:
    text = to_text(value)
    begin = _whole(start, "start")
    if begin < 0:
        begin = max(len(text) + begin, 0)
    if length is None:
        return text[begin:]
    count = _whole(length, "length")
    if count < 0:
        raise MappingError(f"length must not be negative, got {count}")
    return text[begin:begin + count]


def _replace(value: Any, old: Any, new: Any) -> str:
    old_text = to_text(old, "text to replace")
    if not old_text:
        raise MappingError("replace() needs non-empty text to replace")
    return to_text(value).replace(old_text, to_text(new, "replacement"))


def _split(value: Any, separator: Any) -> list[str]:
    sep = to_text(separator, "separator")
    if not sep:
        raise MappingError("split() needs a non-empty separator")
    return to_text(value).split(sep)


def _pad(value: Any, width: Any, fill: Any, left: bool) -> str:
    text = to_text(value)
    size = _whole(width, "width")
    if not 0 <= size <= MAX_PAD:
        raise MappingError(f"width must be between 0 and {MAX_PAD}, got {size}")
    char = " " if fill is None else to_text(fill, "fill")
    if len(char) != 1:
        raise MappingError(f"fill must be one character, got {char!r}")
    return text.rjust(size, char) if left else text.ljust(size, char)


def _pad_left(value: Any, width: Any, fill: Any = None) -> str:
    return _pad(value, width, fill, True)


def _pad_right(value: Any, width: Any, fill: Any = None) -> str:
    return _pad(value, width, fill, False)


def _bind_pad(ctx: BindContext, args: tuple[Any, ...]) -> Any:
    from integration_bus.mapping.functions import literal_int

    literal_int(args, 1, "width", 0, MAX_PAD)
    if len(args) > 2 and isinstance(args[2], str) and len(args[2]) != 1:
        raise BindError(f"fill must be one character, got {args[2]!r}", 2)
    return _pad_left


def _bind_pad_right(ctx: BindContext, args: tuple[Any, ...]) -> Any:
    _bind_pad(ctx, args)
    return _pad_right


def _concat(*values: Any) -> str:
    return "".join("" if v is None else to_text(v) for v in values)


def _starts_with(value: Any, prefix: Any) -> bool:
    return to_text(value).startswith(to_text(prefix, "prefix"))


def _ends_with(value: Any, suffix: Any) -> bool:
    return to_text(value).endswith(to_text(suffix, "suffix"))


def _contains(value: Any, part: Any) -> bool:
    if isinstance(value, list):
        from integration_bus.mapping.values import equals

        return any(equals(item, part) for item in value)
    if isinstance(value, dict):
        raise MappingError(f"contains() works on text or a list, not {type_name(value)}")
    return to_text(part, "part") in to_text(value)


def _bind_nonempty(position: int, what: str, impl: Any) -> Any:
    def bind(ctx: BindContext, args: tuple[Any, ...]) -> Any:
        if len(args) > position and args[position] is not UNKNOWN and args[position] == "":
            raise BindError(f"{what} must not be empty", position)
        return impl

    return bind


_RETURNS: dict[str, type] = {
    **dict.fromkeys(["upper", "lower", "trim", "ltrim", "rtrim", "string", "substring", "replace",
                     "pad_left", "pad_right", "concat"], str),
    "length": int,
    **dict.fromkeys(["starts_with", "ends_with", "contains"], bool),
}

SPECS = built_in([
    FunctionSpec("upper", _upper, 1, 1, "text | upper", "Upper-case text.",
                 fast={str: str.upper}),
    FunctionSpec("lower", _lower, 1, 1, "text | lower", "Lower-case text.",
                 fast={str: str.lower}),
    FunctionSpec("trim", _trim, 1, 1, "text | trim", "Remove surrounding white space.",
                 fast={str: str.strip}),
    FunctionSpec("ltrim", _ltrim, 1, 1, "text | ltrim", "Remove leading white space.",
                 fast={str: str.lstrip}),
    FunctionSpec("rtrim", _rtrim, 1, 1, "text | rtrim", "Remove trailing white space.",
                 fast={str: str.rstrip}),
    FunctionSpec("string", to_text, 1, 1, "value | string",
                 "Canonical text of a number, boolean, date or text.", fast={str: str, int: str}),
    FunctionSpec("length", _length, 1, 1, "value | length",
                 "Characters in text, or items in a list or object.",
                 fast={str: len, list: len, dict: len}),
    FunctionSpec("substring", _substring, 2, 3, "text | substring(start, length?)",
                 "Part of the text from 0-based start (negative counts from the end)."),
    FunctionSpec("replace", _replace, 3, 3, "text | replace(old, new)",
                 "Replace every occurrence of old by new.",
                 bind=_bind_nonempty(1, "text to replace", _replace)),
    FunctionSpec("split", _split, 2, 2, "text | split(separator)",
                 "Split text into a list.", bind=_bind_nonempty(1, "separator", _split)),
    FunctionSpec("pad_left", _pad_left, 2, 3, "text | pad_left(width, fill?)",
                 "Pad on the left to width (fill defaults to a space).", bind=_bind_pad),
    FunctionSpec("pad_right", _pad_right, 2, 3, "text | pad_right(width, fill?)",
                 "Pad on the right to width.", bind=_bind_pad_right),
    FunctionSpec("concat", _concat, 1, None, "concat(a, b, ...)",
                 "Join values as text; null counts as empty text.", null_passes=False),
    FunctionSpec("starts_with", _starts_with, 2, 2, "text | starts_with(prefix)",
                 "Whether the text starts with prefix."),
    FunctionSpec("ends_with", _ends_with, 2, 2, "text | ends_with(suffix)",
                 "Whether the text ends with suffix."),
    FunctionSpec("contains", _contains, 2, 2, "text_or_list | contains(part)",
                 "Whether the text contains part, or the list an equal item."),
], returns=_RETURNS)
