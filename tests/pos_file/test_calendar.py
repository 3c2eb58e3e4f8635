"""The expected-file calendar: missing and late files per store, in store-local time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connectors.pos_file.calendar import Calendar
from connectors.pos_file.config import ExpectedFile
from connectors.pos_file.lane import daily_file_bytes
from integration_bus.store import SourceCursors, Store
from tests.pos_file.support import daily_layout, files_in, open_pos_bus, source_yaml
from tests.support.probe import wait_for

BERLIN = ZoneInfo("Europe/Berlin")


def at(year: int, month: int, day: int, hour: int, minute: int = 0,
       zone: ZoneInfo = BERLIN) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=zone).timestamp()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 'cal.db'}")
    try:
        yield opened
    finally:
        opened.close()


class Alerts:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, date]] = []

    def __call__(self, kind: str, expected: ExpectedFile, day: date, detail: Any) -> None:
        self.seen.append((kind, expected.store, day))


def calendar(db: Store, alerts: Alerts, **overrides: Any) -> Calendar:
    spec = {"store": "0042", "pattern": "SALES_0042_*.DAT", "by": time(6, 0),
            "timezone": "Europe/Berlin", "holidays": [date(2024, 12, 25)], **overrides}
    return Calendar([ExpectedFile(**spec)], SourceCursors(db, "tills"), alerts)


def test_missing_after_the_deadline_on_business_days_once(store: Store) -> None:
    alerts = Alerts()
    cal = calendar(store, alerts)
    cal.tick(at(2024, 3, 4, 5, 59))  # Monday, before 06:00 Berlin
    assert alerts.seen == []
    cal.tick(at(2024, 3, 4, 6, 1))
    cal.tick(at(2024, 3, 4, 9, 0))
    assert alerts.seen == [("missing", "0042", date(2024, 3, 4))]
    cal.tick(at(2024, 3, 10, 9, 0))  # Sunday: not a business day
    cal.tick(at(2024, 12, 25, 9, 0))  # a holiday
    assert len(alerts.seen) == 1
    # a restart does not raise it again: the state is durable
    again = Alerts()
    calendar(store, again).tick(at(2024, 3, 4, 10, 0))
    assert again.seen == []


def test_on_time_and_late_arrivals_by_modification_time(store: Store) -> None:
    alerts = Alerts()
    cal = calendar(store, alerts)
    cal.arrived("SALES_0042_20240304.DAT", at(2024, 3, 4, 5, 30))
    cal.tick(at(2024, 3, 4, 7, 0))
    assert alerts.seen == []  # on time: nothing to say
    cal.arrived("SALES_0042_20240305.DAT", at(2024, 3, 5, 6, 30))
    assert alerts.seen == [("late", "0042", date(2024, 3, 5))]
    cal.arrived("SALES_0107_20240306.DAT", at(2024, 3, 6, 8, 0))  # another store's file
    cal.tick(at(2024, 3, 6, 8, 1))
    assert alerts.seen[-1] == ("missing", "0042", date(2024, 3, 6))


def test_deadlines_are_store_local(store: Store) -> None:
    alerts = Alerts()
    cal = calendar(store, alerts, timezone="America/New_York", store="0311",
                   pattern="SALES_0311_*")
    new_york = ZoneInfo("America/New_York")
    cal.tick(at(2024, 3, 4, 11, 30))  # 11:30 in Berlin is 05:30 in New York
    assert alerts.seen == []
    cal.tick(at(2024, 3, 4, 6, 5, zone=new_york))
    assert alerts.seen == [("missing", "0311", date(2024, 3, 4))]


@pytest.mark.rabbitmq
def test_the_source_raises_missing_then_late_as_journal_events_and_metrics(
        tmp_path: Path, rabbitmq_url: str) -> None:
    # Given a source expecting store 0042's file by 06:00 Berlin, and the clock at 07:00
    expectation = ('calendar: [{store: "0042", pattern: "SALES_0042_*.DAT", by: "06:00", '
                   'timezone: Europe/Berlin}]')
    bus = open_pos_bus(tmp_path, rabbitmq_url, sources=source_yaml(extra=expectation))
    now = at(2024, 3, 4, 7, 0)
    try:
        def gauge() -> float | None:
            return bus.bus.metrics.registry.get_sample_value(
                "pos_file_expected_file_missing",
                {"source": "tills", "store": "0042", "pattern": "SALES_0042_*.DAT"})

        def late_files() -> float | None:
            return bus.bus.metrics.registry.get_sample_value("bus_store_files_late",
                                                             {"store": "0042"})

        with bus.running_source(bus.source(clock=lambda: now)):
            # When no file has come by then
            wait_for(lambda: bus.events("pos_file.file_missing") != [], message="missing")
            assert gauge() == 1.0
            assert late_files() == 1.0
            # and the file comes at 07:10
            name = "SALES_0042_20240304.DAT"
            temp = bus.inbox() / f".{name}"
            temp.write_bytes(daily_file_bytes(daily_layout(), store="0042", records=2))
            os.utime(temp, (now + 600, now + 600))
            os.rename(temp, bus.inbox() / name)
            wait_for(lambda: files_in(bus.work() / "archive") == [name], message="archived")
        # Then missing and late are journal events, and the gauge went back to 0
        (missing,) = bus.events("pos_file.file_missing")
        (late,) = bus.events("pos_file.file_late")
        assert missing["store"] == late["store"] == "0042" and missing["day"] == "2024-03-04"
        assert late["file"] == name and late["arrived"].startswith("2024-03-04T07:10")
        assert gauge() == 0.0 and late_files() == 0.0
        assert bus.bus.metrics.registry.get_sample_value(
            "pos_file_calendar_alerts_total",
            {"source": "tills", "store": "0042", "kind": "missing"}) == 1.0
    finally:
        bus.close()
