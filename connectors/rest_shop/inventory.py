"""Reading a shop's inventory levels for ``bus reconcile``: the StockReader capability of
``rest_shop`` sinks and order polls.

``GET stock.path`` lists the levels the shop holds (``limit`` per page; ``Link: rel="next"``
pages followed on the same origin, at most ``stock.max_pages``: a longer list is an error, never
a partial comparison). Each level carries ``sku``, ``location_id``, ``available`` and
``version``, in the shop's own terms; ``stock.skus`` / ``stock.locations`` (xref tables from the
bus's codes to the shop's, as the outbound mapping uses them) translate them back. A level the
tables do not map back is not the bus's business and is left out. Requests go through the
instance's ShopClient: the shop's token bucket, 429 ``Retry-After`` gates, 5xx backoff.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from connectors.rest_shop.client import ShopClient
from connectors.rest_shop.config import StockListConfig
from connectors.rest_shop.payload import loads_exact
from integration_bus.connector import (
    ConfigError,
    ConnectorContext,
    PermanentError,
    StockReading,
    TransientError,
)

__all__ = ["ShopStockReader"]


class _KeyMap:
    """The bus's codes <-> the shop's, from an xref table (or the same on both sides)."""

    def __init__(self, table: Mapping[str, Any] | None) -> None:
        self.to_shop = None if table is None else {
            str(k): str(v) for k, v in table.items() if v not in (None, "")}
        self._back: dict[str, list[str]] = defaultdict(list)
        for ours, theirs in (self.to_shop or {}).items():
            self._back[theirs].append(ours)  # two SKUs sold as one: the level is both's

    def shop(self, ours: str) -> str | None:
        return ours if self.to_shop is None else self.to_shop.get(ours)

    def ours(self, theirs: str) -> list[str]:
        return [theirs] if self.to_shop is None else self._back.get(theirs, [])


def _level_field(level: Mapping[str, Any], name: str, where: Mapping[str, Any]) -> Any:
    value = level.get(name)
    if value is None or isinstance(value, bool | float):
        raise PermanentError(f"an inventory level without a valid {name!r}", field=name,
                             **where)
    return value


class ShopStockReader:
    """Answers ``read_stock`` for one rest_shop instance through its client."""

    def __init__(self, client: ShopClient, config: StockListConfig, context: ConnectorContext,
                 *, base_url: str) -> None:
        self._client = client
        self._config = config
        self._context = context
        self._base = urlsplit(base_url)
        self._maps: tuple[_KeyMap, _KeyMap] | None = None

    def _prepare(self) -> tuple[_KeyMap, _KeyMap]:
        if self._maps is None:
            tables = []
            for name, field in ((self._config.skus, "stock.skus"),
                                (self._config.locations, "stock.locations")):
                try:
                    tables.append(None if name is None
                                  else self._context.xref(name, field=field).column(None))
                except ConfigError as exc:
                    exc.with_context(connector=self._context.instance)
                    raise
            self._maps = _KeyMap(tables[0]), _KeyMap(tables[1])
        return self._maps

    def read(self, pairs: Sequence[tuple[str, str]] | None) -> list[StockReading]:
        """Readings for ``pairs`` (None: every level the shop lists) that the shop holds."""
        skus, locations = self._prepare()
        params = {"limit": str(self._config.page_size)}
        if pairs is not None:
            ids = sorted({s for _, loc in pairs if (s := locations.shop(loc)) is not None})
            if not ids:
                return []
            params["location_ids"] = ",".join(ids)
        wanted = None if pairs is None else set(pairs)
        readings = []
        for level, where in self._levels(params):
            available = _level_field(level, "available", where)
            version = level.get("version")
            try:
                quantity = Decimal(str(available))
            except InvalidOperation:
                raise PermanentError(f"available is not a number: {available!r}",
                                     field="available", **where) from None
            for sku in skus.ours(str(_level_field(level, "sku", where))):
                for location in locations.ours(str(_level_field(level, "location_id", where))):
                    if wanted is None or (sku, location) in wanted:
                        readings.append(StockReading(
                            sku=sku, location=location, available=quantity,
                            version=version if isinstance(version, int) else None))
        return readings

    def _levels(self, params: dict[str, str]) -> list[tuple[Mapping[str, Any], dict[str, Any]]]:
        """Every level of every page, with where it came from (for errors)."""
        url: str = self._config.path
        query: dict[str, str] | None = params
        out: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
        for page in range(1, self._config.max_pages + 1):
            where = {"connector": self._context.instance, "shop": self._client.shop,
                     "page": page}
            response = self._client.request("GET", url, params=query, where=where)
            assert response is not None  # a GET is retried without a recheck
            if response.status_code != 200:
                error = PermanentError if 400 <= response.status_code < 500 else TransientError
                raise error(f"shop {self._client.shop} answered the inventory list with "
                            f"{response.status_code} {response.reason_phrase}",
                            status=response.status_code, **where)
            data = loads_exact(response.content)
            levels = data.get("inventory_levels") if isinstance(data, dict) else None
            if not isinstance(levels, list):
                raise PermanentError("the answer has no inventory_levels list",
                                     field="inventory_levels", **where)
            for level in levels:
                if not isinstance(level, Mapping):
                    raise PermanentError("an inventory level is not an object", **where)
                out.append((level, where))
            nxt = response.links.get("next", {}).get("url")
            if nxt is None:
                return out
            target = urlsplit(nxt)
            if (target.scheme, target.netloc) != (self._base.scheme, self._base.netloc):
                raise PermanentError(f"the next-page link leaves the shop ({target.netloc})",
                                     field="Link", **where)
            url, query = nxt, None
        raise PermanentError(f"the inventory list has more than {self._config.max_pages} "
                             "pages: raise stock.max_pages (a partial list would report "
                             "false mismatches)", connector=self._context.instance,
                             shop=self._client.shop)
