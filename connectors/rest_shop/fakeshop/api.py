"""The fake shop's HTTP API (FastAPI): a Shopify-flavoured admin API and a WooCommerce-style
order list, over one :class:`ShopState`.

- ``GET /admin/api/2024-01/orders.json`` — ``updated_at_min`` (inclusive), ``limit``;
  keyset pagination through ``Link: <...page_info=...>; rel="next"``.
- ``GET /wp-json/wc/v3/orders`` — ``modified_after`` (exclusive, GMT), ``per_page``, ``page``;
  ``X-WP-Total`` / ``X-WP-TotalPages``.
- ``POST /admin/api/2024-01/inventory_levels/set.json`` — compare-and-set on (sku, location,
  version): 409 if the version is not newer. ``GET .../inventory_levels.json``.
- ``POST|GET /admin/api/2024-01/orders/{id}/fulfillments.json``; ``PUT .../orders/{id}.json``.
- ``POST /admin/api/2024-01/prices/set.json`` — compare-and-set on (sku, location, version)
  like inventory levels; kept in ``state.prices``.
- ``POST /admin/api/2024-01/orders/{id}/cancel_lines.json``: cancel order lines and refund
  them, given as totals per line (cancelled units, refunded money): only what is new takes
  effect, so a repeat refunds nothing twice; kept in ``state.cancellations``.
- ``POST /admin/api/2024-01/orders/{id}/line_statuses.json``: what became of each order line
  (cancelled, back-ordered, re-sourced), kept per (order, sku) in ``state.line_statuses``.

Every API call needs the token (``X-Shopify-Access-Token`` or ``Authorization: Bearer``) or
basic auth, is logged in ``state.requests``, and may be answered 429 (``Retry-After``) or 503
by the injection switches first. A POST with an ``Idempotency-Key`` seen before gets the first
answer again without a second effect.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

from connectors.rest_shop.fakeshop.state import RequestRecord, ShopState

__all__ = ["build_shop_app"]

_API = "/admin/api/2024-01"


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    try:
        data = orjson.dumps(body)
    except TypeError:  # nested deeper than orjson writes: a hostile order a test asked for
        data = json.dumps(body, default=str).encode()
    return Response(data, status_code=status, media_type="application/json",
                    headers=headers)


def _authorised(state: ShopState, request: Request) -> bool:
    auth = request.headers.get("authorization", "")
    token = request.headers.get("x-shopify-access-token")
    if state.token is not None and state.token in (token, auth.removeprefix("Bearer ")):
        return True
    if state.basic is not None and auth.startswith("Basic "):
        expected = base64.b64encode(f"{state.basic[0]}:{state.basic[1]}".encode()).decode()
        return auth == f"Basic {expected}"
    return False


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def build_shop_app(state: ShopState) -> FastAPI:
    """The fake shop's ASGI app over ``state``."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def gatekeeper(request: Request,
                         call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        now, wall = time.monotonic(), time.time()
        path = request.url.path
        key = request.headers.get("idempotency-key")
        if path.startswith("/_sim"):
            return await call_next(request)
        status, retry_after = state.admit(now)
        if status == 0 and not _authorised(state, request):
            status = 401
        if status:
            headers = {"Retry-After": retry_after} if retry_after else None
            response = _json(status, {"errors": "throttled" if status == 429 else
                                      "unavailable" if status == 503 else "unauthorised"},
                             headers)
        else:
            response = await call_next(request)
        query = f"?{request.url.query}" if request.url.query else ""
        state.log(RequestRecord(now, wall, request.method, path + query, response.status_code,
                                key, retry_after))
        return response

    @app.get(f"{_API}/orders.json")
    def shopify_orders(request: Request, updated_at_min: str | None = None, limit: int = 50,
                       page_info: str | None = None) -> Response:
        # a sync handler (thread pool, not the event loop): on_list may block
        if page_info:
            cursor = orjson.loads(base64.urlsafe_b64decode(page_info))
            since, after, limit = _since(cursor["min"]), tuple(cursor["after"]), cursor["limit"]
            number = int(cursor["page"])
        else:
            since, after, number = _since(updated_at_min), None, 1
        if state.on_list is not None:
            state.on_list(number)
        limit = max(1, min(limit, 250))
        rows = [o for o in state.sorted_orders() if since is None or o.updated >= since]
        if after is not None:
            rows = [o for o in rows if (o.updated.isoformat(), o.id) > (after[0], after[1])]
        page, more = rows[:limit], len(rows) > limit
        headers = {}
        if more:
            last = page[-1]
            token = base64.urlsafe_b64encode(orjson.dumps({
                "min": since.isoformat() if since else None,
                "after": [last.updated.isoformat(), last.id], "limit": limit,
                "page": number + 1})).decode()
            url = request.url.replace(query=f"limit={limit}&page_info={token}")
            headers["Link"] = f'<{url}>; rel="next"'
        return _json(200, {"orders": [o.render("shopify") for o in page]}, headers)

    @app.get("/wp-json/wc/v3/orders")
    def woo_orders(modified_after: str | None = None, per_page: int = 10,
                   page: int = 1) -> Response:
        if state.on_list is not None:
            state.on_list(page)
        since = _since(modified_after)
        per_page = max(1, min(per_page, 100))
        rows = [o for o in state.sorted_orders() if since is None or o.updated > since]
        pages = max(1, -(-len(rows) // per_page))
        chunk = rows[(page - 1) * per_page: page * per_page]
        return _json(200, [o.render("woocommerce") for o in chunk],
                     {"X-WP-Total": str(len(rows)), "X-WP-TotalPages": str(pages)})

    def replay(request: Request) -> Response | None:
        key = request.headers.get("idempotency-key")
        with state.lock:
            seen = state.replies.get(f"{request.url.path}|{key}") if key else None
        return _json(seen[0], seen[1]) if seen else None

    def answer(request: Request, status: int, body: dict[str, Any]) -> Response:
        key = request.headers.get("idempotency-key")
        if key:
            with state.lock:
                state.replies[f"{request.url.path}|{key}"] = (status, body)
        return _json(status, body)

    @app.post(f"{_API}/inventory_levels/set.json")
    async def set_inventory(request: Request) -> Response:
        body = orjson.loads(await request.body())
        with state.lock:
            if (again := replay(request)) is not None:
                return again
            where = (str(body["sku"]), str(body["location_id"]))
            _, current = state.inventory.get(where, (0, -1))
            if int(body["version"]) <= current:
                return answer(request, 409, {"errors": {"version": "not newer than "
                                                        f"{current}"}})
            state.inventory[where] = (int(body["available"]), int(body["version"]))
            state.effects[f"inventory:{where[0]}@{where[1]}#{body['version']}"] += 1
            return answer(request, 200, {"inventory_level": {**body}})

    @app.post(f"{_API}/prices/set.json")
    async def set_price(request: Request) -> Response:
        body = orjson.loads(await request.body())
        with state.lock:
            if (again := replay(request)) is not None:
                return again
            where = (str(body["sku"]), str(body["location_id"]))
            current = state.prices.get(where, ("", "", -1))[2]
            if int(body["version"]) <= current:
                return answer(request, 409, {"errors": {"version": "not newer than "
                                                        f"{current}"}})
            state.prices[where] = (str(body["price"]), str(body["currency"]),
                                   int(body["version"]))
            state.effects[f"price:{where[0]}@{where[1]}#{body['version']}"] += 1
            return answer(request, 200, {"price": {**body}})

    @app.get(f"{_API}/inventory_levels.json")
    def inventory_levels() -> Response:
        with state.lock:
            levels = [{"sku": s, "location_id": loc, "available": a, "version": v}
                      for (s, loc), (a, v) in sorted(state.inventory.items())]
        return _json(200, {"inventory_levels": levels})

    @app.post(f"{_API}/orders/{{order_id}}/fulfillments.json")
    async def create_fulfilment(order_id: str, request: Request) -> Response:
        body = orjson.loads(await request.body())["fulfillment"]
        with state.lock:
            if (again := replay(request)) is not None:
                return again
            if not order_id.isdigit() or int(order_id) not in state.orders:
                return answer(request, 404, {"errors": {"order_id": "not found"}})
            made = {"id": len(state.effects) + 1, **body}
            state.fulfilments.setdefault(order_id, []).append(made)
            state.effects[f"fulfilment:{body.get('external_ref')}"] += 1
            return answer(request, 201, {"fulfillment": made})

    @app.get(f"{_API}/orders/{{order_id}}/fulfillments.json")
    def list_fulfilments(order_id: str) -> Response:
        with state.lock:
            return _json(200, {"fulfillments": list(state.fulfilments.get(order_id, []))})

    @app.put(f"{_API}/orders/{{order_id}}.json")
    async def set_status(order_id: str, request: Request) -> Response:
        body = orjson.loads(await request.body())["order"]
        with state.lock:
            state.statuses[order_id] = str(body["status"])
            state.effects[f"status:{order_id}:{body['status']}"] += 1
        return _json(200, {"order": {"id": order_id, "status": body["status"]}})

    @app.post(f"{_API}/orders/{{order_id}}/line_statuses.json")
    async def set_line_statuses(order_id: str, request: Request) -> Response:
        body = orjson.loads(await request.body())
        with state.lock:
            if (again := replay(request)) is not None:
                return again
            lines = state.line_statuses.setdefault(order_id, {})
            for item in body["line_items"]:
                lines[str(item["sku"])] = dict(item)
                state.effects[f"line:{order_id}:{item['sku']}:{item['status']}"] += 1
            return answer(request, 200, {"order": {"id": order_id, "line_items": [
                {"sku": sku, **item} for sku, item in sorted(lines.items())]}})

    @app.post(f"{_API}/orders/{{order_id}}/cancel_lines.json")
    async def cancel_lines(order_id: str, request: Request) -> Response:
        body = orjson.loads(await request.body())
        with state.lock:
            if (again := replay(request)) is not None:
                return again
            lines = state.cancellations.setdefault(order_id, {})
            refunded, made = Decimal("0.00"), []
            for item in body["line_items"]:
                where = str(item.get("line_no") or item["sku"])
                line = lines.setdefault(where, {"sku": str(item["sku"]), "quantity": 0,
                                                "refunded": "0.00"})
                if int(item["quantity"]) > line["quantity"]:  # totals: only what is new
                    line["quantity"] = int(item["quantity"])
                    state.effects[f"cancel:{order_id}:{item['sku']}"] += 1
                target = Decimal(str(item.get("refund") or "0"))
                if target > Decimal(line["refunded"]):
                    refunded += target - Decimal(line["refunded"])
                    line["refunded"] = str(target.quantize(Decimal("0.01")))
                    state.effects[f"refund:{order_id}:{item['sku']}"] += 1
                made.append({"line_no": item.get("line_no"), **line})
            return answer(request, 200, {"refund": {
                "order_id": order_id, "external_ref": body.get("external_ref"),
                "currency": body.get("currency"), "refunded": str(refunded),
                "line_items": made}})

    @app.post("/_sim/orders")
    def sim_orders(count: int = 1) -> Response:
        made = state.add_orders(max(1, min(count, 10_000)))
        return _json(201, {"created": [o.id for o in made]})

    return app
