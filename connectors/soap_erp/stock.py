"""Reading stock from the ERP for ``bus reconcile``: the StockReader capability of ``soap_erp``.

The bus names stock by (sku, location), the ERP by (material, plant, storage location). The
location table (``stock.locations``, an xref table such as ``mappings/xref/location.csv``) gives
each location code its plant and storage location; ``stock.skus`` (optional) the material of a
SKU, else material = SKU. One call of ``stock.operation`` per material and plant answers every
storage location of that plant, so a SKU asked at several locations of one plant costs one call.
Calls go through the instance's SoapClient: breaker, timeouts, hardened parsing, fault table.

Tables and the operation are looked up at the first read, not at start-up: an instance that
never reconciles needs neither (a posting sink's port may not offer the stock query at all).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.soap_erp.client import Operation, SoapClient
from connectors.soap_erp.config import StockQueryConfig
from integration_bus.connector import (
    ConfigError,
    ConnectorContext,
    PermanentError,
    StockReading,
    did_you_mean,
)

__all__ = ["ErpStockReader"]

Place = tuple[str, str]  # plant, storage location


def _quantity(row: Mapping[str, Any], field: str, where: Mapping[str, Any]) -> Decimal | None:
    value = row.get(field)
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise PermanentError(f"the ERP's {field} is not a number: {value!r}", field=field,
                             **where) from None


class ErpStockReader:
    """Answers ``read_stock`` for one soap_erp instance through its client (not thread-safe:
    one reconcile at a time)."""

    def __init__(self, client: SoapClient, config: StockQueryConfig,
                 context: ConnectorContext) -> None:
        self._client = client
        self._config = config
        self._context = context
        self._op: Operation | None = None
        self._places: dict[str, Place] = {}
        self._materials: Mapping[str, Any] | None = None

    def _prepare(self) -> Operation:
        if self._op is not None:
            return self._op
        config, context = self._config, self._context
        try:
            op = self._client.operation(config.operation, field="stock.operation")
            table = context.xref(config.locations, field="stock.locations")
            for column, field in ((config.plant_column, "stock.plant_column"),
                                  (config.storage_location_column,
                                   "stock.storage_location_column")):
                if column not in table.columns:
                    raise ConfigError(f"xref table {table.name!r} has no column {column!r}",
                                      field=field, file=table.file,
                                      hint=did_you_mean(column, table.columns))
            plants = table.column(config.plant_column)
            slocs = table.column(config.storage_location_column)
            self._places = {str(key): (str(plants[key]), str(slocs[key])) for key in plants}
            if config.skus is not None:
                self._materials = context.xref(config.skus, field="stock.skus").column(None)
        except ConfigError as exc:
            exc.with_context(connector=context.instance)
            raise
        self._op = op
        return op

    def _place(self, location: str) -> Place:
        place = self._places.get(location)
        if place is None:
            raise ConfigError(f"location {location!r} is not in xref table "
                              f"{self._config.locations!r}: the ERP's plant is unknown",
                              field="stock.locations", connector=self._context.instance,
                              hint=did_you_mean(location, self._places))
        return place

    def _material(self, sku: str) -> str | None:
        if self._materials is None:
            return sku
        material = self._materials.get(sku)
        return None if material in (None, "") else str(material)

    def read(self, pairs: Sequence[tuple[str, str]] | None) -> list[StockReading]:
        """Readings for ``pairs`` the ERP has a stock record of (see StockReader)."""
        if pairs is None:
            raise PermanentError("the ERP is asked per material and plant: name the (sku, "
                                 "location) pairs to read", connector=self._context.instance)
        op = self._prepare()
        wanted: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
        for sku, location in dict.fromkeys(pairs):
            plant, sloc = self._place(location)
            material = self._material(sku)
            if material is not None:  # a SKU without a material: the ERP keeps no record
                wanted[(material, plant)].append((sku, location, sloc))
        readings = []
        for (material, plant), asked in wanted.items():
            where = {"connector": self._context.instance, "material": material,
                     "plant": plant}
            answer = self._client.call(op, {"Material": material, "Plant": plant}, **where)
            rows = answer.get("Stock") or []
            found: dict[str, Mapping[str, Any]] = {
                str(row.get("StorageLocation")): row
                for row in (rows if isinstance(rows, list) else [rows])
                if isinstance(row, Mapping) and str(row.get("Material", material)) == material}
            for sku, location, sloc in asked:
                row = found.get(sloc)
                if row is not None:
                    readings.append(StockReading(
                        sku=sku, location=location,
                        on_hand=_quantity(row, "OnHand", where),
                        reserved=_quantity(row, "Reserved", where),
                        available=_quantity(row, "Available", where)))
        return readings
