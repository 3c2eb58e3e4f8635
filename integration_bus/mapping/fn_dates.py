"""Dates and datetimes: parsing, formatting, time zones and the store-local business day.

Datetimes in the language are always time-zone aware: text without an offset needs the zone it was
written in (``'2024-03-01 09:30' | parse_datetime('%Y-%m-%d %H:%M', 'Europe/Berlin')``). Zone
names and formats given as literals are checked at load.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from integration_bus.errors import MappingError
from integration_bus.mapping.functions import (
    UNKNOWN,
    BindContext,
    BindError,
    FunctionSpec,
    built_in,
)
from integration_bus.mapping.values import DECIMAL_CONTEXT, to_decimal, to_text, type_name
from integration_bus.suggest import closest

__all__ = ["SPECS", "zone"]

_DIRECTIVES = set("aAwdbBmyYHIpMSfzZjUWcxXGuV%")
_CUTOFF = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_MAX_TEXT = 64
_MAX_DAYS = 100_000
_CTX = DECIMAL_CONTEXT  # computations pass it explicitly (see values.DECIMAL_CONTEXT)


def zone(name: Any) -> tzinfo:
    """The time zone called ``name`` (IANA name such as ``Europe/Berlin``, or ``UTC``)."""
    if not isinstance(name, str) or not name or len(name) > 64 or ".." in name:
        raise MappingError(f"unknown time zone {name!r}")
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise MappingError(f"unknown time zone {name!r}") from exc


def _check_format(fmt: Any) -> str:
    text = to_text(fmt, "format")
    i = 0
    while i < len(text):
        if text[i] == "%":
            if i + 1 >= len(text) or text[i + 1] not in _DIRECTIVES:
                raise MappingError(f"format {text!r} has an unknown directive at position {i}",
                                   hint="use strftime directives such as %Y-%m-%d %H:%M:%S")
            i += 2
        else:
            i += 1
    return text


def _iso_text(value: Any) -> str:
    text = to_text(value).strip()
    if len(text) > _MAX_TEXT:
        raise MappingError(f"{text[:20]!r}... is too long for a date")
    return text


def _as_datetime(value: Any, tz: Any = None) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time())
    elif isinstance(value, str):
        text = _iso_text(value)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise MappingError(f"{text!r} is not an ISO 8601 datetime",
                               hint="for other layouts use parse_datetime(format, zone)") from exc
    else:
        raise MappingError(f"{type_name(value)} is not a datetime")
    if moment.tzinfo is None:
        if tz is None:
            raise MappingError(f"{value} has no time zone",
                               hint="name the zone it was written in: | datetime('Europe/Berlin')")
        moment = moment.replace(tzinfo=zone(tz))
    return moment


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = _iso_text(value)
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise MappingError(f"{text!r} is not an ISO 8601 date (YYYY-MM-DD)",
                           hint="for other layouts use parse_date(format)") from exc


def _datetime(value: Any, tz: Any = None) -> datetime:
    return _as_datetime(value, tz)


def _parse_datetime(value: Any, fmt: Any, tz: Any = None) -> datetime:
    text = _iso_text(value)
    try:
        moment = datetime.strptime(text, _check_format(fmt))
    except ValueError as exc:
        raise MappingError(f"{text!r} does not match the format {fmt!r}") from exc
    return _as_datetime(moment, tz)


def _parse_date(value: Any, fmt: Any) -> date:
    text = _iso_text(value)
    try:
        return datetime.strptime(text, _check_format(fmt)).date()
    except ValueError as exc:
        raise MappingError(f"{text!r} does not match the format {fmt!r}") from exc


def _to_tz(value: Any, tz: Any) -> datetime:
    return _as_datetime(value).astimezone(zone(tz))


def _format(value: Any, fmt: Any) -> str:
    pattern = _check_format(fmt)
    moment: date = value if isinstance(value, date) else _as_datetime(value)
    try:
        return moment.strftime(pattern)
    except ValueError as exc:
        raise MappingError(f"cannot format {moment} with {fmt!r}: {exc}") from exc


def _format_date(value: Any, fmt: Any) -> str:
    return _format(value if isinstance(value, date) else _as_date(value), fmt)


def _format_datetime(value: Any, fmt: Any) -> str:
    return _format(_as_datetime(value), fmt)


def _cutoff(value: Any) -> timedelta:
    match = _CUTOFF.match(value) if isinstance(value, str) else None
    if match is None:
        raise MappingError(f"cutoff {value!r} must be HH:MM", hint="e.g. '04:00'")
    return timedelta(hours=int(match[1]), minutes=int(match[2]))


def _business_day(value: Any, tz: Any, cutoff: Any = "00:00") -> date:
    local = _as_datetime(value).astimezone(zone(tz))
    return (local - _cutoff(cutoff)).date()


def _add_days(value: Any, days: Any) -> date:
    count = to_decimal(days, "days")
    if count != count.to_integral_value(None, _CTX) or _CTX.abs(count) > _MAX_DAYS:
        raise MappingError(f"days must be a whole number up to {_MAX_DAYS}, got {days}")
    base = value if isinstance(value, date) else _as_date(value)
    try:
        return base + timedelta(days=int(count))
    except OverflowError as exc:
        raise MappingError(f"{base} + {int(count)} days is out of range") from exc


def _from_unix(value: Any, unit: Any = "s") -> datetime:
    number = to_decimal(value, "timestamp")
    if unit == "ms":
        number = _CTX.divide(number, 1000)
    elif unit != "s":
        raise MappingError(f"unit must be 's' or 'ms', got {unit!r}")
    if _CTX.abs(number) > Decimal(253402300799):
        raise MappingError(f"timestamp {value} is out of range")
    whole = int(number)
    fraction = _CTX.subtract(number, whole)
    micros = int(_CTX.multiply(fraction, 1_000_000).to_integral_value(None, _CTX))
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=whole, microseconds=micros)


def _bind_checks(impl: Any, *, zones: tuple[int, ...] = (), formats: tuple[int, ...] = (),
                 cutoffs: tuple[int, ...] = ()) -> Any:
    def bind(ctx: BindContext, args: tuple[Any, ...]) -> Any:
        for index, value in enumerate(args):
            if value is UNKNOWN or value is None:
                continue
            try:
                if index in zones:
                    zone(value)
                elif index in formats:
                    _check_format(value)
                elif index in cutoffs:
                    _cutoff(value)
            except MappingError as exc:
                hint = exc.context.get("hint")
                if index in zones:
                    hint = closest(str(value), _zone_names()) or \
                        "use an IANA name such as Europe/Berlin"
                raise BindError(exc.message, index, hint=hint) from exc
        return impl

    return bind


def _zone_names() -> set[str]:
    return available_timezones() | {"UTC"}


_RETURNS: dict[str, type] = {"format_date": str, "format_datetime": str}

SPECS = built_in([
    FunctionSpec("date", _as_date, 1, 1, "text | date", "A date from ISO text (YYYY-MM-DD)."),
    FunctionSpec("datetime", _datetime, 1, 2, "text | datetime(zone?)",
                 "A datetime from ISO 8601 text; zone is used when the text has no offset.",
                 bind=_bind_checks(_datetime, zones=(1,))),
    FunctionSpec("parse_date", _parse_date, 2, 2, "text | parse_date(format)",
                 "A date from text in a strftime format.",
                 bind=_bind_checks(_parse_date, formats=(1,))),
    FunctionSpec("parse_datetime", _parse_datetime, 2, 3, "text | parse_datetime(format, zone?)",
                 "A datetime from text in a strftime format, in zone when it has no offset.",
                 bind=_bind_checks(_parse_datetime, formats=(1,), zones=(2,))),
    FunctionSpec("to_tz", _to_tz, 2, 2, "datetime | to_tz(zone)",
                 "The same instant in another time zone.", bind=_bind_checks(_to_tz, zones=(1,))),
    FunctionSpec("format_date", _format_date, 2, 2, "date | format_date(format)",
                 "Date as text in a strftime format.",
                 bind=_bind_checks(_format_date, formats=(1,))),
    FunctionSpec("format_datetime", _format_datetime, 2, 2, "datetime | format_datetime(format)",
                 "Datetime as text in a strftime format.",
                 bind=_bind_checks(_format_datetime, formats=(1,))),
    FunctionSpec("business_day", _business_day, 2, 3, "datetime | business_day(zone, cutoff?)",
                 "The store-local business day of an instant: its date in zone, where the day "
                 "starts at cutoff (HH:MM, default 00:00).",
                 bind=_bind_checks(_business_day, zones=(1,), cutoffs=(2,))),
    FunctionSpec("add_days", _add_days, 2, 2, "date | add_days(n)", "The date n days later."),
    FunctionSpec("from_unix", _from_unix, 1, 2, "number | from_unix(unit?)",
                 "A UTC datetime from a Unix timestamp in 's' (default) or 'ms'."),
], returns=_RETURNS)
