"""The expected-file calendar: "store S sends a file matching P by HH:MM, store-local time, on
business days". A file that has not arrived by its deadline raises a ``missing`` alert; one that
arrives after it (by its modification time), or after ``missing`` was raised, raises ``late``.
Alerts go to the ``alert`` callback (the source turns them into a metric, a log line and a
journal event), at most once per expectation and business day: the state lives in the durable
cursor store, so a restart does not repeat them. Only the current store-local day is checked: a
day the bus was down for entirely is not reported afterwards.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from connectors.pos_file.config import ExpectedFile
from integration_bus.connector import CursorStore

__all__ = ["AlertKind", "Calendar", "deadline", "is_business_day"]

AlertKind = Literal["missing", "late"]
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def is_business_day(expected: ExpectedFile, day: date) -> bool:
    return _WEEKDAYS[day.weekday()] in expected.days and day not in expected.holidays


def deadline(expected: ExpectedFile, day: date) -> datetime:
    """The deadline on ``day``, as an aware datetime in the store's zone."""
    return datetime.combine(day, expected.by, tzinfo=ZoneInfo(expected.timezone))


class Calendar:
    """Checks expectations against arrivals. ``tick(now)`` raises due ``missing`` alerts;
    ``arrived(name, mtime)`` records a file (and a ``late`` alert when it is late)."""

    def __init__(self, expected: list[ExpectedFile], cursors: CursorStore,
                 alert: Callable[[AlertKind, ExpectedFile, date, dict[str, str]], None]) -> None:
        self._expected = expected
        self._cursors = cursors
        self._alert = alert
        self._settled: set[str] = set()  # days known to have a state (saves a query per tick)

    def _key(self, expected: ExpectedFile, day: date) -> str:
        return f"calendar:{expected.store}:{expected.pattern}:{day.isoformat()}"

    def tick(self, now: float) -> None:
        """Raise ``missing`` for today's deadlines that passed without a file."""
        for expected in self._expected:
            zone = ZoneInfo(expected.timezone)
            local = datetime.fromtimestamp(now, zone)
            day = local.date()
            due = deadline(expected, day)
            if not is_business_day(expected, day) or local < due:
                continue
            key = self._key(expected, day)
            if key in self._settled:
                continue
            if self._cursors.get(key) is None:
                self._cursors.set(key, "missing")
                self._alert("missing", expected, day, {"deadline": due.isoformat()})
            self._settled.add(key)

    def arrived(self, name: str, mtime: float) -> None:
        """A file was claimed: mark its day on time, or raise ``late``."""
        for expected in self._expected:
            if not fnmatch.fnmatchcase(name, expected.pattern):
                continue
            local = datetime.fromtimestamp(mtime, ZoneInfo(expected.timezone))
            day = local.date()
            if not is_business_day(expected, day):
                continue
            key = self._key(expected, day)
            state = self._cursors.get(key)
            if state in ("on_time", "late"):
                continue
            due = deadline(expected, day)
            on_time = local <= due and state != "missing"
            self._cursors.set(key, "on_time" if on_time else "late")
            self._settled.add(key)
            if not on_time:
                self._alert("late", expected, day, {"deadline": due.isoformat(),
                                                    "arrived": local.isoformat(), "file": name})
