"""What the fake shop knows: orders, inventory levels, fulfilments, and every request it saw.

All of it behind one lock, so HTTP handlers (uvicorn's thread) and tests (their own thread) can
look at it at any time. Effects are counted per kind and key so a test can prove "no duplicate
effect": an inventory level applied, a fulfilment created, a status set.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

__all__ = ["SCENARIO_SKUS", "Order", "RequestRecord", "ShopState"]

_EPOCH = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

#: What the reference scenario's shop sells, under its own SKU codes, with prices
#: (mappings/xref/sku.csv translates them to the ERP's materials): ``bus demo``'s orders and
#: ``bus sim shop``'s are made of these, so they pass the scenario's mappings.
SCENARIO_SKUS: dict[str, Decimal] = {
    "TSHIRT-BLK-M": Decimal("19.99"), "TSHIRT-BLK-L": Decimal("19.99"),
    "MUG-WHITE": Decimal("8.50"), "WOO-CAP-NVY": Decimal("14.00")}


@dataclass
class Order:
    """One order, rendered in either platform's JSON dialect."""

    id: int
    number: int
    created: datetime
    updated: datetime
    lines: list[tuple[str, int, Decimal]]
    status: str = "processing"
    email: str = "anna@example.com"
    #: fields laid over the rendered JSON (None removes one): a malformed or hostile order
    overlay: dict[str, Any] = field(default_factory=dict)

    def total(self) -> Decimal:
        return sum((price * qty for _, qty, price in self.lines), Decimal("0.00"))

    def shopify(self) -> dict[str, Any]:
        return {"id": self.id, "name": f"#{self.number}", "email": self.email,
                "created_at": self.created.isoformat(), "updated_at": self.updated.isoformat(),
                "currency": "USD", "financial_status": "paid", "status": self.status,
                "total_price": str(self.total()),
                "customer": {"id": self.id + 7, "email": self.email, "first_name": "Anna",
                             "last_name": "Smith"},
                "line_items": [{"id": self.id * 10 + i, "sku": sku, "quantity": qty,
                                "price": str(price)}
                               for i, (sku, qty, price) in enumerate(self.lines)]}

    def woocommerce(self) -> dict[str, Any]:
        gmt = "%Y-%m-%dT%H:%M:%S"
        return {"id": self.id, "number": str(self.number), "status": self.status,
                "currency": "EUR", "date_created_gmt": self.created.strftime(gmt),
                "date_modified_gmt": self.updated.strftime(gmt), "total": str(self.total()),
                "customer_id": 26, "billing": {"first_name": "Anna", "last_name": "Schmidt",
                                               "email": self.email},
                "meta_data": [],
                "line_items": [{"id": self.id * 10 + i, "sku": sku, "quantity": qty,
                                "price": float(price), "subtotal": str(price * qty),
                                "total": str(price * qty)}
                               for i, (sku, qty, price) in enumerate(self.lines)]}

    def render(self, platform: str) -> dict[str, Any]:
        body = self.shopify() if platform == "shopify" else self.woocommerce()
        for key, value in self.overlay.items():
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
        return body


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the shop saw it (``at``: time.monotonic(), ``wall``: time.time(),
    both on arrival; ``path`` includes the query string)."""

    at: float
    wall: float
    method: str
    path: str
    status: int
    idempotency_key: str | None = None
    retry_after: str | None = None


@dataclass
class ShopState:
    """The shop's data and its behaviour switches (auth, throttling, failures)."""

    token: str | None = "shpat-test-token"
    basic: tuple[str, str] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    orders: dict[int, Order] = field(default_factory=dict)
    inventory: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    fulfilments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    #: (sku, location) -> (price, currency, version): compare-and-set on the version
    prices: dict[tuple[str, str], tuple[str, str, int]] = field(default_factory=dict)
    #: order id -> sku -> what the bus said became of that order line (status, quantity, ...)
    line_statuses: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: order id -> line (line_no, else sku) -> {sku, cancelled units, refunded money}: set by
    #: cancel_lines as totals, so a repeated request cancels and refunds nothing more
    cancellations: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    replies: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    requests: list[RequestRecord] = field(default_factory=list)
    effects: Counter[str] = field(default_factory=Counter)
    throttle_left: int = 0
    throttle_retry_after: str = "1"
    fail_left: int = 0
    rate: float | None = None  # requests per second the shop allows (None: unlimited)
    #: called with the page number before an order page is read (tests change orders
    #: between two pages, or hold a poll mid-pagination, with it)
    on_list: Callable[[int], None] | None = None
    _window: list[float] = field(default_factory=list)
    _next_id: int = 9_007_199_254_740_993  # 2**53 + 1: exact only if never a float

    # -- behaviour switches ------------------------------------------------------------------
    def throttle(self, count: int, retry_after: str) -> None:
        """Answer the next ``count`` API requests 429 with this ``Retry-After`` value."""
        with self.lock:
            self.throttle_left, self.throttle_retry_after = count, retry_after

    def fail(self, count: int) -> None:
        """Answer the next ``count`` API requests 503."""
        with self.lock:
            self.fail_left = count

    def admit(self, now: float) -> tuple[int, str | None]:
        """Status to answer before handling (0 = handle it) and its Retry-After."""
        with self.lock:
            if self.throttle_left > 0:
                self.throttle_left -= 1
                return 429, self.throttle_retry_after
            if self.fail_left > 0:
                self.fail_left -= 1
                return 503, None
            if self.rate is not None:
                self._window = [t for t in self._window if now - t < 1.0]
                if len(self._window) >= self.rate:
                    return 429, "1"
                self._window.append(now)
            return 0, None

    def log(self, record: RequestRecord) -> None:
        with self.lock:
            self.requests.append(record)

    # -- orders ----------------------------------------------------------------------------------
    def add_orders(self, count: int, *, same_second: int = 1,
                   skus: dict[str, Decimal] | None = None) -> list[Order]:
        """``count`` new orders, updated one second apart (``same_second`` share each second).

        Without ``skus`` each order has two lines of ``SKU-1`` and ``SKU-2`` (codes no mapping
        knows: for connector tests); with ``skus`` (code -> price) order ``i`` has one line of
        the ``i``-th code in turn, 1 to 2 units."""
        codes = sorted(skus) if skus else []
        with self.lock:
            made = []
            latest = max((o.updated for o in self.orders.values()), default=_EPOCH)
            for i in range(count):
                stamp = latest + timedelta(seconds=1 + i // same_second)
                if skus:
                    code = codes[i % len(codes)]
                    lines = [(code, 1 + i % 2, skus[code])]
                else:
                    lines = [("SKU-1", 1 + i % 3, Decimal("19.99")),
                             ("SKU-2", 1, Decimal("0.10"))]
                order = Order(id=self._next_id, number=1000 + len(self.orders), created=stamp,
                              updated=stamp, lines=lines)
                self.orders[order.id] = order
                self._next_id += 1
                made.append(order)
            return made

    def touch(self, order_id: int) -> Order:
        """Update an order now (it moves to the end of the update order)."""
        with self.lock:
            order = self.orders[order_id]
            latest = max(o.updated for o in self.orders.values())
            order.updated = latest + timedelta(seconds=1)
            return order

    def sorted_orders(self) -> list[Order]:
        with self.lock:
            return sorted(self.orders.values(), key=lambda o: (o.updated, o.id))

    def count_attempts(self, path_part: str) -> list[RequestRecord]:
        with self.lock:
            return [r for r in self.requests if path_part in r.path]

