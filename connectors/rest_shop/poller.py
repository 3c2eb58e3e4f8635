"""The order poll: orders updated since a cursor, page by page, staged with the cursor.

Each page is staged through ``ConnectorContext.stage`` together with the cursor it reaches, in
one transaction (the outbox relay then publishes with confirms): a crash can neither lose a
fetched order nor move the cursor past one. The cursor is the latest ``updated`` time staged
plus the ids staged at exactly that time, so a boundary order is not taken twice and one
updated again later is taken again (new idempotency key: ``shop:order:ID@UPDATED``).

Pagination:

- ``link`` (Shopify): ``updated_at_min`` + ``order=updated_at asc``, then the ``rel="next"``
  URL of each ``Link`` header (keyset cursors, stable while orders change). A next URL on
  another origin is refused.
- ``page`` (WooCommerce): ``modified_after`` + ``orderby=modified&order=asc`` + ``page=N``,
  ``X-WP-TotalPages``. Plain page numbers skip an order when another one moves to the end
  between two pages, so after a page that moved the cursor the poll asks for page 1 again
  from the new cursor; it turns to page N+1 only while a full page shares the cursor's time.

The shop must return each page in ascending update order; a page that is not is refused.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from connectors.rest_shop.client import ClientPolicy, ShopClient
from connectors.rest_shop.config import PollConfig
from connectors.rest_shop.inventory import ShopStockReader
from connectors.rest_shop.metrics import RestShopMetrics
from connectors.rest_shop.payload import loads_exact
from connectors.rest_shop.ratelimit import PacerPool
from integration_bus.connector import (
    ConnectorContext,
    Envelope,
    PermanentError,
    StockReading,
    TransientError,
    UnpublishableError,
)

__all__ = ["OrdersPoller", "PollCursor"]

_PATHS = {"shopify": "/admin/api/2024-01/orders.json", "woocommerce": "/wp-json/wc/v3/orders"}
_CURSOR_KEY = "orders"
_PAGE_DEPTH = 800  # a page is read this deep, so one order nested too deep fails alone


@dataclass(frozen=True)
class _Order:
    """One order of a page: its update time and id, or the error that keeps it out."""

    stamp: datetime | None
    order_id: str | None
    order: Any
    error: PermanentError | None


def _text(order: Any) -> str:
    """An order as text for its dead letter (deterministic: it keys the rejection too)."""
    try:
        return json.dumps(order, sort_keys=True, default=str)
    except (RecursionError, ValueError):
        ident = order.get("id") if isinstance(order, dict) else None
        return f"(an order nested too deep to show: id {ident})"


def _when(text: Any, field: str, where: dict[str, Any]) -> datetime:
    if not isinstance(text, str):
        raise PermanentError(f"order has no {field!r} time", field=field, **where)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PermanentError(f"order {field!r} is not an ISO-8601 time", field=field,
                             **where) from None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


@dataclass(frozen=True)
class PollCursor:
    """Latest update time staged, and the order ids staged at exactly that time."""

    since: datetime
    ids: frozenset[str]

    def dump(self) -> str:
        return orjson.dumps({"since": self.since.isoformat(), "ids": sorted(self.ids)}).decode()

    @classmethod
    def load(cls, raw: str | None, default: str) -> PollCursor:
        if not raw:
            return cls(_when(default, "since", {}), frozenset())
        data = orjson.loads(raw)
        return cls(_when(data["since"], "since", {}), frozenset(data["ids"]))

    def is_new(self, stamp: datetime, order_id: str) -> bool:
        return stamp > self.since or (stamp == self.since and order_id not in self.ids)

    def advance(self, stamp: datetime, order_id: str) -> PollCursor:
        if stamp > self.since:
            return PollCursor(stamp, frozenset({order_id}))
        return PollCursor(self.since, self.ids | {order_id})


class OrdersPoller:
    """A PollingSource: ``poll()`` stages the orders updated since the cursor. Also a
    StockReader of the shop's inventory levels (``bus reconcile``, see ``inventory``)."""

    def __init__(self, config: PollConfig, context: ConnectorContext, pacers: PacerPool) -> None:
        self.name = context.instance
        self.interval_ms = config.interval
        self._config = config
        self._context = context
        self._updated_field = "updated_at" if config.platform == "shopify" else \
            "date_modified_gmt"
        self._client = ShopClient(
            shop=config.shop, action="poll", base_url=config.base_url, auth=config.auth,
            timeouts=config.timeouts, pacer=pacers.get(config.shop, 1000.0, 1000),
            policy=ClientPolicy(max_attempts=3, backoff=500, max_retry_after=60_000,
                                max_inline_wait=5_000),
            metrics=RestShopMetrics.of(context.metrics.registry),
            max_response=config.max_response)
        self._stock = ShopStockReader(self._client, config.stock, context,
                                      base_url=config.base_url)

    def read_stock(self, pairs: Sequence[tuple[str, str]] | None) -> list[StockReading]:
        """StockReader: the shop's inventory levels (of ``pairs``; None: all it lists)."""
        return self._stock.read(pairs)

    def _params(self, cursor: PollCursor, page: int) -> dict[str, str]:
        size = str(self._config.page_size)
        if self._config.platform == "shopify":
            return {"updated_at_min": cursor.since.isoformat(), "limit": size,
                    "status": "any", "order": "updated_at asc"}
        after = (cursor.since - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
        return {"modified_after": after, "dates_are_gmt": "true", "per_page": size,
                "page": str(page), "orderby": "modified", "order": "asc"}

    def _fetch(self, url: str, params: dict[str, str] | None) -> httpx.Response:
        where = {"source": self.name}
        response = self._client.request("GET", url, params=params, where=where)
        assert response is not None  # GET is retried without a recheck
        if response.status_code != 200:
            error = PermanentError if 400 <= response.status_code < 500 else TransientError
            raise error(f"shop {self._config.shop} answered the order poll with "
                        f"{response.status_code} {response.reason_phrase}",
                        status=response.status_code, shop=self._config.shop, **where)
        return response

    def _orders(self, response: httpx.Response, page: int) -> list[_Order]:
        """The page's orders in order; one that cannot be taken (no id, no valid update time)
        comes back with its error, to be dead-lettered alone. Raises PermanentError only for
        what breaks the whole page (not an order list, orders out of update order)."""
        data = loads_exact(response.content, max_depth=_PAGE_DEPTH)
        orders = data.get("orders") if isinstance(data, dict) else data
        if not isinstance(orders, list):
            raise PermanentError("the order list is not a JSON array", field="orders",
                                 shop=self._config.shop, page=page)
        out: list[_Order] = []
        last: datetime | None = None
        for order in orders:
            where = {"shop": self._config.shop, "page": page,
                     "order_id": order.get("id") if isinstance(order, dict) else None}
            try:
                if not isinstance(order, dict) or order.get("id") is None:
                    raise PermanentError("an order without an id", field="id", **where)
                stamp = _when(order.get(self._updated_field), self._updated_field, where)
            except PermanentError as exc:
                out.append(_Order(None, None, order, exc))
                continue
            if last is not None and stamp < last:
                raise PermanentError("the shop returned orders out of update order",
                                     field=self._updated_field, **where,
                                     hint="the poll needs ascending update order")
            last = stamp
            out.append(_Order(stamp, str(order["id"]), order, None))
        return out

    def _envelope(self, stamp: datetime, order_id: str, order: Any, page: int) -> Envelope:
        cfg = self._config
        return Envelope.create(
            f"{cfg.type_prefix}.{cfg.platform}.order_updated", order, source=self.name,
            idempotency_key=f"{cfg.shop}:order:{order_id}@{stamp.isoformat()}",
            headers={"source_ref": {"shop": cfg.shop, "order_id": order_id,
                                    "updated_at": stamp.isoformat(), "page": page}})

    def _next_link(self, response: httpx.Response) -> str | None:
        url = response.links.get("next", {}).get("url")
        if url is None:
            return None
        base, target = urlsplit(self._config.base_url), urlsplit(url)
        if (target.scheme, target.netloc) != (base.scheme, base.netloc):
            raise PermanentError(f"the next-page link leaves the shop ({target.netloc})",
                                 shop=self._config.shop, field="Link")
        return url

    def poll(self) -> int:
        """One round; how many orders it staged. Raises BusError when the shop fails."""
        cursor = PollCursor.load(self._context.cursors.get(_CURSOR_KEY), self._config.since)
        if self._config.paging == "link":
            return self._poll_links(cursor)
        return self._poll_pages(cursor)

    def _take(self, cursor: PollCursor, orders: list[_Order], page: int,
              *, upto: datetime | None = None) -> tuple[PollCursor, int]:
        """Stage the new orders (those not after ``upto``, if given) with the cursor they
        reach; the new cursor and how many were staged. An order that cannot be taken or
        cannot travel (too deep to encode) is dead-lettered alone, once (remembered by key),
        and the cursor moves past it: it never holds up the orders behind it."""
        envelopes, rejects = [], []
        for item in orders:
            if item.stamp is None or item.order_id is None:
                rejects.append((item, item.error))
                continue
            if (upto is not None and item.stamp > upto) or \
                    not cursor.is_new(item.stamp, item.order_id):
                continue
            envelope = self._envelope(item.stamp, item.order_id, item.order, page)
            try:
                envelope.encode(sys.maxsize)  # its size is the relay's to judge
            except UnpublishableError as exc:
                rejects.append((item, exc))
            else:
                envelopes.append(envelope)
            cursor = cursor.advance(item.stamp, item.order_id)
        self._reject(rejects, page)
        if envelopes or rejects:
            self._context.stage(envelopes, (_CURSOR_KEY, cursor.dump()))
        return cursor, len(envelopes)

    def _reject(self, rejects: list[tuple[_Order, PermanentError | None]], page: int) -> None:
        if not rejects:
            return
        keyed = {self._reject_key(item): (item, error) for item, error in rejects}
        known = self._context.seen.seen(list(keyed))
        for key, (item, error) in keyed.items():
            if key in known:
                continue
            raw_id = item.order.get("id") if isinstance(item.order, dict) else None
            ref = {"shop": self._config.shop, "page": page,
                   "order_id": item.order_id or (None if raw_id is None else str(raw_id)),
                   "updated_at": item.stamp.isoformat() if item.stamp else None}
            failure = error or PermanentError("the order cannot be taken")
            self._context.reject(_text(item.order), failure.with_context(**ref), ref)
            self._context.seen.remember([(key, None)])

    def _reject_key(self, item: _Order) -> str:
        if item.stamp is not None and item.order_id is not None:
            return f"{self._config.shop}:rejected:{item.order_id}@{item.stamp.isoformat()}"
        digest = hashlib.sha256(_text(item.order).encode()).hexdigest()
        return f"{self._config.shop}:rejected:{digest}"

    def _poll_links(self, cursor: PollCursor) -> int:
        path, link, staged = _PATHS[self._config.platform], None, 0
        for page in range(1, self._config.max_pages + 1):
            response = self._fetch(link or path, None if link else self._params(cursor, 1))
            cursor, count = self._take(cursor, self._orders(response, page), page)
            staged += count
            link = self._next_link(response)
            if link is None:
                break
        return staged

    def _poll_pages(self, cursor: PollCursor) -> int:
        """Page numbers, re-anchored on the cursor after every page that moved it. Orders
        sharing the cursor's time beyond one page are paged through by number; an order that
        moves away meanwhile shifts the rest of that group one place left, so before the
        cursor leaves such a group the group is read again from page 1, until a pass over it
        finds nothing new."""
        path, page, staged = _PATHS[self._config.platform], 1, 0
        tie_pages, found_in_pass = False, False
        for _ in range(self._config.max_pages):
            response = self._fetch(path, self._params(cursor, page))
            orders = self._orders(response, page)
            before = cursor
            beyond = any(o.stamp is not None and o.stamp > cursor.since for o in orders)
            if tie_pages and beyond and found_in_pass:
                cursor, count = self._take(cursor, orders, page, upto=cursor.since)
                staged += count
                page, tie_pages, found_in_pass = 1, False, False  # read the group again
                continue
            cursor, count = self._take(cursor, orders, page)
            staged += count
            found_in_pass |= count > 0 and cursor.since == before.since
            pages = int(response.headers.get("x-wp-totalpages", "1") or 1)
            if len(orders) < self._config.page_size:
                break
            if cursor.since > before.since:
                page, tie_pages, found_in_pass = 1, False, False
            else:
                page, tie_pages = page + 1, True
                if page > pages:
                    break
        return staged

    def close(self) -> None:
        self._client.close()
