"""The stock projection's table: one row per (sku, location), written by compare-and-set.

An upsert wins only when its source version is higher than the stored one, so late, repeated
or replayed levels never roll stock back (``integration_bus.retail.projection`` decides what
the rows mean). Quantities are decimal strings: SQLite has no decimal type.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from integration_bus.store.database import Database, dialect_insert
from integration_bus.store.schema import stock_projection as table

__all__ = ["StockLevels", "StockRow"]

_CHANGED = ("on_hand", "reserved", "in_transit", "version", "source", "envelope_id",
            "updated_at")


@dataclass(frozen=True, slots=True)
class StockRow:
    """A level as stored; ``updated_at``: when the projection took it in."""

    sku: str
    location: str
    on_hand: str
    reserved: str
    in_transit: str
    version: int
    updated_at: datetime
    source: str | None = None
    envelope_id: str | None = None


class StockLevels:
    """Reads and compare-and-sets the stock projection table of one store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def upsert_newer(self, rows: Iterable[StockRow]) -> set[tuple[str, str]]:
        """Write ``rows`` in one transaction, each only where its version is higher than the
        stored one; returns the (sku, location) pairs that moved. At most one row per pair."""
        moved: set[tuple[str, str]] = set()
        with self.db.begin() as conn:
            for row in rows:
                stmt = dialect_insert(conn.dialect.name, table).values(
                    sku=row.sku, location=row.location, on_hand=row.on_hand,
                    reserved=row.reserved, in_transit=row.in_transit, version=row.version,
                    source=row.source, envelope_id=row.envelope_id, updated_at=row.updated_at)
                upsert = stmt.on_conflict_do_update(
                    index_elements=["sku", "location"],
                    set_={c: stmt.excluded[c] for c in _CHANGED},
                    where=table.c.version < stmt.excluded.version,  # the compare-and-set
                ).returning(table.c.sku)
                if conn.execute(upsert).first() is not None:
                    moved.add((row.sku, row.location))
        return moved

    def get(self, sku: str, location: str) -> StockRow | None:
        with self.db.begin(read_only=True) as conn:
            row = conn.execute(select(table).where(table.c.sku == sku,
                                                   table.c.location == location)).first()
        return _row(row) if row is not None else None

    def of_skus(self, skus: Sequence[str]) -> list[StockRow]:
        """Every location's row of each of ``skus``, in one read."""
        with self.db.begin(read_only=True) as conn:
            rows = conn.execute(select(table).where(table.c.sku.in_(skus))).all()
        return [_row(r) for r in rows]

    def all(self) -> list[StockRow]:
        with self.db.begin(read_only=True) as conn:
            rows = conn.execute(select(table).order_by(table.c.sku, table.c.location)).all()
        return [_row(r) for r in rows]


def _row(row: Any) -> StockRow:
    return StockRow(sku=row.sku, location=row.location, on_hand=row.on_hand,
                    reserved=row.reserved, in_transit=row.in_transit, version=int(row.version),
                    source=row.source, envelope_id=row.envelope_id, updated_at=row.updated_at)
