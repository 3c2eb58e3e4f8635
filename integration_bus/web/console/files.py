"""The files page: per source and store, the expected-file calendar (received, late, missing),
the files received, and those quarantined or refused with their reason — control-total
mismatches apart.

It reads what the file sources leave behind: their journal events (``pos_file.archived``,
``.quarantined``, ``.refused``, ``.duplicate``, ``.file_late``, ``.file_missing``) and the
calendar's per-day state in the cursor store (``<source>:calendar:<store>:<pattern>:<day>``).
Any source whose validated config has a ``calendar`` of expectations (store, pattern, by,
timezone, days, holidays) is shown — the page imports no connector.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from integration_bus.runtime import Bus
from integration_bus.store import business

if TYPE_CHECKING:
    from integration_bus.web.console.pages import Console

__all__ = ["CONTROL_TOTALS", "FILE_EVENTS", "files_view", "router"]

FILE_EVENTS = ("pos_file.archived", "pos_file.quarantined", "pos_file.refused",
               "pos_file.duplicate", "pos_file.file_late", "pos_file.file_missing")
#: the error type of a file whose trailer totals disagree with its records
CONTROL_TOTALS = "ControlTotalError"
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_STATES = {"on_time": "received", "late": "late", "missing": "missing"}


@dataclass(frozen=True)
class _Expected:
    source: str
    store: str
    pattern: str
    by: Any  # datetime.time
    timezone: str
    days: tuple[str, ...]
    holidays: tuple[date, ...]


def _expectations(bus: Bus) -> list[_Expected]:
    found = []
    for name, instance in sorted(bus.config.sources.items()):
        for item in getattr(instance.config, "calendar", None) or ():
            found.append(_Expected(name, str(item.store), str(item.pattern), item.by,
                                   str(item.timezone), tuple(item.days), tuple(item.holidays)))
    return found


def _day_state(bus: Bus, expected: _Expected, day: date, now: datetime) -> str:
    """received, late, missing, not due yet, no file expected, or no record (the source did
    not watch that day)."""
    key = f"{expected.source}:calendar:{expected.store}:{expected.pattern}:{day.isoformat()}"
    state = bus.store.cursor_get(key)
    if state in _STATES:
        return _STATES[state]
    if _WEEKDAYS[day.weekday()] not in expected.days or day in expected.holidays:
        return "no file expected"
    zone = ZoneInfo(expected.timezone)
    if now.astimezone(zone) < datetime.combine(day, expected.by, tzinfo=zone):
        return "not due yet"
    return "no record"


def files_view(bus: Bus, days: int, now: datetime | None = None) -> dict[str, Any]:
    """What the files page shows over the last ``days`` days."""
    now = now or datetime.now(UTC)
    with bus.store.db.begin(read_only=True) as conn:
        events = business.connector_events(conn, FILE_EVENTS, now - timedelta(days=days),
                                           limit=5000)
    calendar = []
    for expected in _expectations(bus):
        today = now.astimezone(ZoneInfo(expected.timezone)).date()
        span = [today - timedelta(days=n) for n in range(days)]
        calendar.append({"source": expected.source, "store": expected.store,
                         "pattern": expected.pattern, "by": expected.by.strftime("%H:%M"),
                         "timezone": expected.timezone,
                         "days": [(d, _day_state(bus, expected, d, now)) for d in span]})
    received: dict[tuple[str, str], dict[str, Any]] = {}
    quarantined: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    controls: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    for event in events:
        detail = {**event["detail"], "at": event["at"]}
        source, store = str(detail.get("connector") or ""), str(detail.get("store") or "")
        kind = event["event"].removeprefix("pos_file.")
        if kind == "archived":
            row = received.setdefault((source, store), {
                "source": source, "store": store, "files": 0, "records": 0, "rejected": 0,
                "last_at": event["at"], "last_file": detail.get("file")})
            row["files"] += 1
            row["records"] += int(detail.get("records") or 0)
            row["rejected"] += int(detail.get("rejected") or 0)
        elif kind == "quarantined":
            (controls if detail.get("error_type") == CONTROL_TOTALS else quarantined
             ).append(detail)
        elif kind == "refused":
            refused.append(detail)
        elif kind == "duplicate":
            duplicates.append(detail)
        else:
            alerts.append({**detail, "kind": kind.removeprefix("file_")})
    return {"calendar": calendar, "received": sorted(received.values(),
                                                     key=lambda r: (r["source"], r["store"])),
            "quarantined": quarantined, "refused": refused, "controls": controls,
            "duplicates": duplicates, "alerts": alerts, "days": days, "at": now}


def router(console: Console) -> APIRouter:
    pages = APIRouter()

    @pages.get("/files", response_class=HTMLResponse)
    def files(request: Request) -> Response:
        who = console.who(request)
        who.require("read")
        try:
            days = int(request.query_params.get("days", "7"))
        except ValueError:
            days = 7
        view = files_view(console.bus, max(1, min(days, 31)))
        return console.render(request, "files.html", who, **view)

    return pages
