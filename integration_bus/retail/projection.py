"""The stock projection: on hand / reserved / in transit per (sku, location), and availability.

Levels come from inventory events (the ERP is the system of record). Applying one is a
compare-and-set on the source version of that (sku, location): an upsert that only wins when
its version is higher than the stored one. Late, duplicated or replayed events can therefore
never roll stock back, whatever order they arrive in (DESIGN §3.4). Quantities are decimals,
stored as text (SQLite has no decimal type, and a float never carries stock).

Available to promise = on hand - reserved - safety stock (+ in transit where configured).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from integration_bus.envelope import Envelope
from integration_bus.errors import PermanentError
from integration_bus.store import Store, utcnow
from integration_bus.store.stock import StockLevels, StockRow

__all__ = ["AvailabilityPolicy", "Stock", "StockLevel", "StockProjection"]

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class StockLevel:
    """An absolute level reported by the source at ``version`` (its per-pair sequence)."""

    sku: str
    location: str
    on_hand: Decimal
    version: int
    reserved: Decimal = _ZERO
    in_transit: Decimal = _ZERO
    source: str | None = None
    envelope_id: str | None = None

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> StockLevel:
        """Read a canonical stock level payload; PermanentError naming the field otherwise."""
        payload = envelope.payload
        if not isinstance(payload, Mapping):
            raise PermanentError("a stock level must be an object", envelope_id=envelope.id)
        where = {"envelope_id": envelope.id}
        for name in ("sku", "location"):
            if not isinstance(payload.get(name), str) or not payload[name]:
                raise PermanentError(f"missing {name}", field=name, **where)
            if len(payload[name]) > 128:
                raise PermanentError(f"{name} is longer than 128 characters", field=name,
                                     **where)
        version = payload.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise PermanentError("version must be a non-negative integer (the source's "
                                 "sequence for this sku and location)", field="version", **where)
        return cls(sku=payload["sku"], location=payload["location"],
                   on_hand=_quantity(payload.get("on_hand"), "on_hand", where),
                   reserved=_quantity(payload.get("reserved", 0), "reserved", where),
                   in_transit=_quantity(payload.get("in_transit", 0), "in_transit", where),
                   version=version, source=envelope.source, envelope_id=envelope.id)


def _quantity(value: Any, field: str, where: Mapping[str, str]) -> Decimal:
    if isinstance(value, float | bool) or value is None:
        raise PermanentError(f"{field} must be a decimal string or an integer, not {value!r}",
                             field=field, **where)
    try:
        quantity = Decimal(str(value))
    except InvalidOperation:
        raise PermanentError(f"{field} is not a number: {value!r}", field=field,
                             **where) from None
    if not quantity.is_finite():
        raise PermanentError(f"{field} must be finite", field=field, **where)
    return quantity


@dataclass(frozen=True)
class AvailabilityPolicy:
    """Safety stock per location (else the default) and whether in-transit stock counts."""

    safety_stock: Decimal = _ZERO
    per_location: Mapping[str, Decimal] | None = None
    include_in_transit: bool = False

    def safety_for(self, location: str) -> Decimal:
        return (self.per_location or {}).get(location, self.safety_stock)


@dataclass(frozen=True, slots=True)
class Stock:
    """One (sku, location) as the projection knows it, with available to promise."""

    sku: str
    location: str
    on_hand: Decimal
    reserved: Decimal
    in_transit: Decimal
    safety_stock: Decimal
    available: Decimal  # never below zero; ``short`` says by how much it would be
    short: Decimal
    version: int
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"sku": self.sku, "location": self.location, "on_hand": str(self.on_hand),
                "reserved": str(self.reserved), "in_transit": str(self.in_transit),
                "safety_stock": str(self.safety_stock), "available": str(self.available),
                "short": str(self.short), "version": self.version,
                "updated_at": self.updated_at.isoformat()}


class StockProjection:
    """Reads and compare-and-sets the projection in the bus's store."""

    def __init__(self, store: Store, policy: AvailabilityPolicy | None = None) -> None:
        self.store = store
        self.policy = policy or AvailabilityPolicy()
        self._levels = StockLevels(store.db)

    def apply(self, levels: Sequence[StockLevel]) -> list[bool]:
        """Apply levels in one transaction; per level, True when it moved the projection (it
        was newer than what was stored), False when it was stale or a repeat."""
        newest: dict[tuple[str, str], StockLevel] = {}
        for level in levels:
            key = (level.sku, level.location)
            if key not in newest or level.version > newest[key].version:
                newest[key] = level
        now = utcnow()
        moved = self._levels.upsert_newer(
            StockRow(sku=level.sku, location=level.location, on_hand=str(level.on_hand),
                     reserved=str(level.reserved), in_transit=str(level.in_transit),
                     version=level.version, updated_at=now, source=level.source,
                     envelope_id=level.envelope_id)
            for level in newest.values())
        return [(lv.sku, lv.location) in moved and newest[(lv.sku, lv.location)] is lv
                for lv in levels]

    def apply_envelopes(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """Apply stock level envelopes; one outcome each (None = applied or already superseded,
        a PermanentError naming the field for a payload that is not a stock level)."""
        outcomes: list[BaseException | None] = []
        levels = []
        for envelope in envelopes:
            try:
                levels.append(StockLevel.from_envelope(envelope))
                outcomes.append(None)
            except PermanentError as exc:
                outcomes.append(exc)
        self.apply(levels)
        return outcomes

    def get(self, sku: str, location: str) -> Stock | None:
        row = self._levels.get(sku, location)
        return self._stock(row) if row is not None else None

    def available_to_promise(self, pairs: Sequence[tuple[str, str]]
                             ) -> dict[tuple[str, str], Decimal | None]:
        """ATP per (sku, location) in one read; None for a pair without a level."""
        wanted = set(pairs)
        out: dict[tuple[str, str], Decimal | None] = dict.fromkeys(wanted)
        if not wanted:
            return out
        for row in self._levels.of_skus(sorted({sku for sku, _ in wanted})):
            if (row.sku, row.location) in wanted:
                out[(row.sku, row.location)] = self._stock(row).available
        return out

    def of_sku(self, sku: str, *, limit: int = 500) -> list[Stock]:
        """The SKU at every location the projection knows it (an availability lookup)."""
        rows = sorted(self._levels.of_skus([sku]), key=lambda row: row.location)
        return [self._stock(r) for r in rows[:limit]]

    def all(self) -> list[Stock]:
        return [self._stock(r) for r in self._levels.all()]

    def _stock(self, row: StockRow) -> Stock:
        on_hand, reserved = Decimal(row.on_hand), Decimal(row.reserved)
        in_transit = Decimal(row.in_transit)
        safety = self.policy.safety_for(row.location)
        atp = on_hand - reserved - safety + (in_transit if self.policy.include_in_transit
                                             else _ZERO)
        return Stock(sku=row.sku, location=row.location, on_hand=on_hand, reserved=reserved,
                     in_transit=in_transit, safety_stock=safety, available=max(atp, _ZERO),
                     short=max(-atp, _ZERO), version=int(row.version),
                     updated_at=row.updated_at)
