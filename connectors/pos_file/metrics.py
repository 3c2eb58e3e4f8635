"""Prometheus collectors of the ``pos_file`` connector, registered on the bus's own registry.

- ``pos_file_files_total{source, outcome}``: archived, quarantined, duplicate, refused, returned
- ``pos_file_records_total{source, outcome}``: published, rejected
- ``pos_file_discovered_total{source}``: files seen for the first time in an inbox
- ``pos_file_calendar_alerts_total{source, store, kind}``: missing, late
- ``pos_file_expected_file_missing{source, store, pattern}``: 1 while an expected file is missing
- ``bus_store_files_late{store}``: expected files of the store past their deadline and not
  arrived yet (the sum of the above per store: what the store-files SLA alert watches)
"""

from __future__ import annotations

import weakref
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["PosFileMetrics"]


class PosFileMetrics:
    """One set of collectors per registry: every ``pos_file`` instance of a bus shares it."""

    # Keyed weakly by the bus's registry: a cache of what was registered there, not shared
    # state between buses (each Bus has its own registry and so its own collectors).
    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, PosFileMetrics]] = (
        weakref.WeakKeyDictionary())

    def __init__(self, registry: CollectorRegistry) -> None:
        self.files = Counter("pos_file_files", "POS files by outcome", ["source", "outcome"],
                             registry=registry)
        self.records = Counter("pos_file_records", "POS file records by outcome",
                               ["source", "outcome"], registry=registry)
        self.discovered = Counter("pos_file_discovered", "Files seen in an inbox", ["source"],
                                  registry=registry)
        self.alerts = Counter("pos_file_calendar_alerts", "Expected files missing or late",
                              ["source", "store", "kind"], registry=registry)
        self.missing = Gauge("pos_file_expected_file_missing",
                             "1 while an expected file has not arrived",
                             ["source", "store", "pattern"], registry=registry)
        self.late = Gauge("bus_store_files_late", "Expected files past their deadline and not "
                          "arrived, per store", ["store"], registry=registry)
        self._missing: dict[tuple[str, str, str], bool] = {}

    def set_missing(self, source: str, store: str, pattern: str, missing: bool) -> None:
        """One expected file missing (or not any more): both gauges."""
        self.missing.labels(source, store, pattern).set(1 if missing else 0)
        self._missing[(source, store, pattern)] = missing
        self.late.labels(store).set(sum(v for (_, s, _), v in self._missing.items()
                                        if s == store))

    @classmethod
    def of(cls, registry: CollectorRegistry) -> PosFileMetrics:
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found
