"""Stock reconciliation: do the ERP, the shop and the bus's projection agree, per (sku, location)?

The ERP is the system of record. For every pair compared, three checks, each against the ERP:

- ``projection_on_hand``: the projection's on hand equals the ERP's;
- ``projection_available``: the projection's on hand - reserved equals the ERP's available
  (on hand - reserved; safety stock and in-transit are the bus's own policy, not compared);
- ``shop_available``: the shop's available equals the ERP's, only for pairs the shop carries
  (it lists a level for them). A shop never shows less than zero, so 0 agrees with a negative
  ERP available.

A system without a record of a pair holds none of it: the ERP and the projection count as 0
(so stock the ERP has and the projection never heard of is a mismatch). Pairs = the SKU universe
(every SKU the projection or the shop knows, plus those asked for) x the locations compared;
a pair no system has a record of is not compared. Mismatch ratio = mismatched / compared.

The readers are connector instances that are :class:`~integration_bus.connector.StockReader`\\ s
(``soap_erp`` and ``rest_shop`` ones, or any third-party plugin's), named in ``bus.yaml``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from integration_bus.connector import PollingSource, Sink, Source, StockReader, StockReading
from integration_bus.envelope import new_id
from integration_bus.errors import BusError, ConfigError, TransientError, did_you_mean
from integration_bus.retail.projection import Stock, StockProjection
from integration_bus.settings import Config
from integration_bus.store import JournalEntry, Settlement, Store, utcnow

__all__ = ["CHECKS", "REPORT_EVENT", "PairResult", "ReconcileBus", "ReconcileMetrics",
           "ReconcileReport", "compare", "open_reader", "reconcile", "reconcile_bus",
           "write_metrics_file"]

CHECKS = ("projection_on_hand", "projection_available", "shop_available")
#: the journal event holding each reconcile's report (the console's stock page reads the last)
REPORT_EVENT = "reconcile.done"
#: mismatched pairs kept in that event (the counts are always whole)
KEPT_PAIRS = 2000
_ZERO = Decimal(0)
log = structlog.get_logger("integration_bus.reconcile")


@dataclass(frozen=True)
class PairResult:
    """One (sku, location): what each system holds (None: no record) and the failed checks."""

    sku: str
    location: str
    erp: StockReading | None
    projection: Stock | None
    shop: StockReading | None
    failed: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        def text(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        erp = None if self.erp is None else {
            "on_hand": text(_on_hand(self.erp)), "reserved": text(self.erp.reserved),
            "available": text(_erp_available(self.erp))}
        projection = None if self.projection is None else {
            "on_hand": str(self.projection.on_hand), "reserved": str(self.projection.reserved),
            "available": str(self.projection.on_hand - self.projection.reserved),
            "version": self.projection.version}
        shop = None if self.shop is None else {
            "available": text(self.shop.available), "version": self.shop.version}
        return {"sku": self.sku, "location": self.location, "failed": list(self.failed),
                "erp": erp, "projection": projection, "shop": shop}


@dataclass(frozen=True)
class ReconcileReport:
    erp: str
    shop: str
    locations: tuple[str, ...]
    compared: int
    mismatches: tuple[PairResult, ...]
    started_at: datetime
    seconds: float

    @property
    def mismatched(self) -> int:
        return len(self.mismatches)

    @property
    def ratio(self) -> float:
        return self.mismatched / self.compared if self.compared else 0.0

    def by_check(self) -> dict[str, int]:
        return {check: sum(check in m.failed for m in self.mismatches) for check in CHECKS}

    def to_dict(self) -> dict[str, Any]:
        return {"erp": self.erp, "shop": self.shop, "locations": list(self.locations),
                "started_at": self.started_at.isoformat(), "seconds": round(self.seconds, 3),
                "compared": self.compared, "mismatched": self.mismatched,
                "mismatch_ratio": round(self.ratio, 6), "by_check": self.by_check(),
                "mismatches": [m.to_dict() for m in self.mismatches]}


def _on_hand(reading: StockReading) -> Decimal:
    return reading.on_hand if reading.on_hand is not None else _ZERO


def _erp_available(reading: StockReading) -> Decimal:
    if reading.available is not None:
        return reading.available
    return _on_hand(reading) - (reading.reserved or _ZERO)


def compare(erp: StockReading | None, projection: Stock | None,
            shop: StockReading | None) -> tuple[str, ...]:
    """The checks one pair fails (see the module docstring); () when all agree."""
    erp_on_hand = _on_hand(erp) if erp else _ZERO
    erp_available = _erp_available(erp) if erp else _ZERO
    on_hand = projection.on_hand if projection else _ZERO
    available = projection.on_hand - projection.reserved if projection else _ZERO
    failed = []
    if on_hand != erp_on_hand:
        failed.append("projection_on_hand")
    if available != erp_available:
        failed.append("projection_available")
    if shop is not None:
        shown = shop.available if shop.available is not None else _ZERO
        if shown != erp_available and not (erp_available < 0 and shown == 0):
            failed.append("shop_available")
    return tuple(failed)


def reconcile(erp: StockReader, shop: StockReader, projection: StockProjection, *,
              locations: Sequence[str] = (), skus: Sequence[str] = ()) -> ReconcileReport:
    """Compare the three (see the module docstring). ``locations`` empty: every location the
    projection or the shop knows. Raises what the readers raise (BusError)."""
    started, clock = datetime.now(UTC), time.perf_counter()
    stocked = projection.all()
    shop_levels = shop.read_stock(None)
    places = tuple(dict.fromkeys(locations)) or tuple(sorted(
        {s.location for s in stocked} | {r.location for r in shop_levels}))
    universe = sorted({s.sku for s in stocked} | {r.sku for r in shop_levels} | set(skus))
    pairs = [(sku, location) for sku in universe for location in places]
    ours = {(s.sku, s.location): s for s in stocked}
    theirs = {(r.sku, r.location): r for r in shop_levels if r.location in places}
    erp_levels = {(r.sku, r.location): r for r in erp.read_stock(pairs)} if pairs else {}
    compared, mismatches = 0, []
    for sku, location in pairs:
        in_erp, in_projection = erp_levels.get((sku, location)), ours.get((sku, location))
        in_shop = theirs.get((sku, location))
        if in_erp is None and in_projection is None and in_shop is None:
            continue  # no system has heard of it: nothing to compare
        compared += 1
        failed = compare(in_erp, in_projection, in_shop)
        if failed:
            mismatches.append(PairResult(sku, location, in_erp, in_projection, in_shop, failed))
    return ReconcileReport(erp=erp.name, shop=shop.name, locations=places, compared=compared,
                           mismatches=tuple(mismatches), started_at=started,
                           seconds=time.perf_counter() - clock)


class ReconcileBus(Protocol):
    """What reconciling uses of a bus: a :class:`~integration_bus.runtime.Bus` is one.
    Reconcile sits below the runtime and is handed the bus; it never imports it."""

    @property
    def config(self) -> Config: ...

    @property
    def stock(self) -> StockProjection: ...

    def source(self, name: str) -> Source | PollingSource: ...

    def sink(self, name: str) -> Sink: ...

    @property
    def store(self) -> Store: ...


@contextmanager
def open_reader(bus: ReconcileBus, name: str, option: str) -> Iterator[StockReader]:
    """The source (else sink) ``name`` of the bus as a StockReader, closed afterwards.
    ConfigError naming ``option`` when there is none or it cannot read stock."""
    config = bus.config
    reader: Source | PollingSource | Sink
    if name in config.sources:
        kind, instance, reader = "source", config.sources[name], bus.source(name)
    elif name in config.sinks:
        kind, instance, reader = "sink", config.sinks[name], bus.sink(name)
    else:
        raise ConfigError(f"no source or sink named {name!r}", field=option,
                          file=str(config.file),
                          hint=did_you_mean(name, [*config.sources, *config.sinks]))
    try:
        if not isinstance(reader, StockReader):
            raise ConfigError(f"{kind} {name!r} ({instance.connector}) cannot read stock",
                              field=option, file=str(config.file),
                              hint="name a soap_erp source or sink, a rest_shop sink or order "
                                   "poll, or an instance of any connector that is a "
                                   "StockReader")
        yield reader
    finally:
        reader.close()


def reconcile_bus(bus: ReconcileBus, *, erp: str | None = None, shop: str | None = None,
                  locations: Sequence[str] = (), skus: Sequence[str] = ()) -> ReconcileReport:
    """Reconcile with the bus's instances and projection; unset options come from the
    ``reconcile:`` section of bus.yaml (ConfigError when neither names the ERP or the shop)."""
    settings = bus.config.settings.reconcile
    names = {"--erp": erp or settings.erp, "--shop": shop or settings.shop}
    for option, name in names.items():
        if name is None:
            raise ConfigError(f"name the instance that reads stock: {option} NAME, or "
                              f"reconcile.{option[2:]} in bus.yaml", field=option,
                              file=str(bus.config.file))
    with ExitStack() as stack:
        readers = [stack.enter_context(open_reader(bus, str(n), o)) for o, n in names.items()]
        report = reconcile(readers[0], readers[1], bus.stock,
                           locations=locations or settings.locations, skus=skus)
    _remember(bus, report)
    return report


def _remember(bus: ReconcileBus, report: ReconcileReport) -> None:
    """The report as a journal event (``REPORT_EVENT``), so the console shows the last one
    whoever ran it (CLI, scheduler, console). A store that cannot take it costs the record,
    not the reconcile: logged."""
    detail = report.to_dict()
    detail["mismatches"] = detail["mismatches"][:KEPT_PAIRS]
    detail["kept"] = len(detail["mismatches"])
    try:  # straight to the journal: Bus.record would also log the whole report
        bus.store.settle(Settlement(journal=[JournalEntry(new_id(), REPORT_EVENT, utcnow(),
                                                          detail=detail)]))
    except BusError as exc:
        log.warning("reconcile.not_recorded", error=str(exc))


class ReconcileMetrics:
    """Gauges of the last reconcile, labelled by the ERP and shop instances compared:

    - ``bus_reconcile_mismatch_ratio``: mismatched / compared pairs
    - ``bus_reconcile_pairs_compared``, ``bus_reconcile_pairs_mismatched``
    - ``bus_reconcile_mismatches{check}``: mismatched pairs per failed check
    - ``bus_reconcile_duration_seconds``
    - ``bus_reconcile_last_success_timestamp_seconds``: when it last completed (alert when old)
    - ``bus_stock_mismatches{location}``: (sku, location) pairs that differ at each location
      compared in the last reconcile (0 where all agree)
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["erp", "shop"]
        self.ratio = Gauge("bus_reconcile_mismatch_ratio", "Mismatched / compared (sku, "
                           "location) pairs in the last reconcile", labels, registry=registry)
        self.compared = Gauge("bus_reconcile_pairs_compared", "(sku, location) pairs compared",
                              labels, registry=registry)
        self.mismatched = Gauge("bus_reconcile_pairs_mismatched", "(sku, location) pairs that "
                                "differ", labels, registry=registry)
        self.by_check = Gauge("bus_reconcile_mismatches", "Mismatched pairs per failed check",
                              [*labels, "check"], registry=registry)
        self.duration = Gauge("bus_reconcile_duration_seconds", "How long the reconcile took",
                              labels, registry=registry)
        self.last_success = Gauge("bus_reconcile_last_success_timestamp_seconds",
                                  "When a reconcile last completed (Unix time)", labels,
                                  registry=registry)
        self.by_location = Gauge("bus_stock_mismatches", "(sku, location) pairs that differ "
                                 "per location in the last reconcile", ["location"],
                                 registry=registry)

    def observe(self, report: ReconcileReport) -> None:
        key = (report.erp, report.shop)
        self.ratio.labels(*key).set(report.ratio)
        self.compared.labels(*key).set(report.compared)
        self.mismatched.labels(*key).set(report.mismatched)
        for check, count in report.by_check().items():
            self.by_check.labels(*key, check).set(count)
        self.duration.labels(*key).set(report.seconds)
        self.last_success.labels(*key).set(report.started_at.timestamp() + report.seconds)
        per_location = dict.fromkeys(report.locations, 0)
        for mismatch in report.mismatches:
            per_location[mismatch.location] = per_location.get(mismatch.location, 0) + 1
        for location, count in per_location.items():
            self.by_location.labels(location).set(count)


def write_metrics_file(path: Path, report: ReconcileReport) -> None:
    """The report's gauges in the Prometheus text format at ``path`` (node_exporter's textfile
    collector reads ``*.prom``), replaced atomically. TransientError if it cannot be written."""
    registry = CollectorRegistry(auto_describe=True)
    ReconcileMetrics(registry).observe(report)
    try:
        write_to_textfile(str(path), registry)
    except OSError as exc:
        raise TransientError(f"cannot write the metrics file: {exc.strerror}", file=str(path)) \
            from exc
