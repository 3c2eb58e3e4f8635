"""The overview's business tiles: web order to ERP sales order age (p50/p95), reservations the
ERP refused, stock mismatches of the last reconcile, late and missing store files, and how fast
dead letters arrive. Each reads the store through ``store/business.py``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from integration_bus.reconcile import REPORT_EVENT
from integration_bus.runtime import Bus
from integration_bus.store import business

__all__ = ["FILE_ALERTS", "WINDOW", "percentile", "tiles"]

#: the tiles look back this far
WINDOW = timedelta(hours=24)
FILE_ALERTS = ("pos_file.file_late", "pos_file.file_missing")


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` 0.5 = median); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _since(moment: datetime | None, now: datetime) -> float | None:
    """Seconds from ``moment`` to ``now`` (SQLite gives naive UTC times, PostgreSQL aware)."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return max(0.0, (now - aware).total_seconds())


def tiles(bus: Bus, now: datetime | None = None) -> dict[str, Any]:
    """The figures of the tiles, over the last ``WINDOW`` (the reconcile: the last one)."""
    now = now or datetime.now(UTC)
    since = now - WINDOW
    with bus.store.db.begin(read_only=True) as conn:
        ages = business.sales_order_ages(conn, since)
        waiting, oldest = business.without_sales_order(conn, since)
        short = business.reservation_failures(conn, since)
        last_hour = business.dead_letters_since(conn, now - timedelta(hours=1))
        last_day = business.dead_letters_since(conn, since)
        alerts = business.connector_events(conn, FILE_ALERTS, since)
        last = business.last_event(conn, REPORT_EVENT)
    report = last["detail"] if last else None
    return {
        "orders": {"count": len(ages), "p50": percentile(ages, 0.5),
                   "p95": percentile(ages, 0.95), "waiting": waiting,
                   "oldest_waiting": _since(oldest, now)},
        "reservation_failures": short,
        "stock": None if report is None else {
            "at": last["at"] if last else None, "compared": report.get("compared", 0),
            "mismatched": report.get("mismatched", 0)},
        "files": {"late": sum(a["event"] == "pos_file.file_late" for a in alerts),
                  "missing": sum(a["event"] == "pos_file.file_missing" for a in alerts)},
        "dead_letters": {"last_hour": last_hour, "last_day": last_day,
                         "hourly_average": last_day / 24},
    }
