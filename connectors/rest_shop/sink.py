"""The shop sink: one ``action`` per instance, pushed through a paced, retrying ShopClient.

Payload contracts (canonical envelopes produced by a route's mapping):

- ``inventory``: ``sku``, ``location``, ``available`` (integer), ``version`` (integer source
  sequence). The shop applies it as a compare-and-set on (sku, location, version); a 409 (a
  newer version is already there) counts as done: arrival order cannot roll stock back.
- ``fulfilment``: ``order_id``, ``lines`` ([{``sku``, ``quantity``}]), optional
  ``tracking_number``, ``carrier``. POST with the envelope's idempotency key as
  ``Idempotency-Key`` and as ``external_ref``; :meth:`ShopSink.lookup` finds it by that ref.
- ``order_status``: ``order_id``, ``status``; an idempotent PUT.
- ``price``: ``sku``, ``location``, ``price`` and ``currency`` (decimal text), optional
  ``compare_at``, ``version`` (integer source sequence): compare-and-set on (sku, location,
  version) like ``inventory`` — a 409 (a newer price is there) counts as done.
- ``order_lines``: ``order_id``, ``lines`` ([{``sku``, ``quantity``, ``status``:
  ``cancelled`` | ``back_ordered`` | ``re_sourced`` | ``fulfilled``, optional ``line_no``,
  ``location``, ``expected_date``}]), optional ``reason``: what became of each order line (the
  order process manager's outcome), POSTed with the envelope's idempotency key.
- ``cancel_lines``: ``order_id``, ``lines`` ([{``sku``, ``quantity``, optional ``line_no``,
  ``refund`` (decimal text: the money to give back for those units; null: the shop's own
  figure)}]), optional ``currency``, ``reason``: cancel order lines and refund them. Sent as
  the lines' cancelled *totals* (a set, not a delta) with the idempotency key as
  ``external_ref``: the shop cancels and refunds only what is not cancelled/refunded yet, so a
  repeat can never refund twice. The answer must hold ``refund``.

A delivery counts only on a checked answer: a 2xx whose body is a JSON object holding the
action's ``answer`` key (``inventory_level``, ``fulfillment``, ``order``); an empty 200/204 or
another shape is a TransientError naming the missing key (retried: the idempotency key, or the
fulfilment lookup, keeps the repeat single). ``answer: null`` accepts any 2xx.

Errors: TransientError (429 beyond the inline wait, 5xx, timeouts; context ``retry_after_ms``)
or PermanentError (missing/invalid field, 4xx), both naming shop, sink and envelope id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from connectors.rest_shop.client import ClientPolicy, ShopClient
from connectors.rest_shop.config import RestShopSinkConfig
from connectors.rest_shop.inventory import ShopStockReader
from connectors.rest_shop.metrics import RestShopMetrics
from connectors.rest_shop.ratelimit import PacerPool
from integration_bus.connector import (
    ConfigError,
    ConnectorContext,
    Envelope,
    PermanentError,
    StockReading,
    TransientError,
)

__all__ = ["ShopSink"]

_LINE_STATUSES = frozenset({"cancelled", "back_ordered", "re_sourced", "fulfilled"})


def _field(payload: Any, name: str, kind: type | tuple[type, ...],
           where: dict[str, Any]) -> Any:
    value = payload.get(name) if isinstance(payload, dict) else None
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        raise PermanentError(f"payload field {name!r} is missing or not "
                             f"{getattr(kind, '__name__', 'valid')}", field=name, **where)
    return value


class ShopSink:
    """Delivers inventory levels, fulfilments or order statuses to one shop; also a
    StockReader of the shop's inventory levels (``bus reconcile``, see ``inventory``)."""

    def __init__(self, config: RestShopSinkConfig, context: ConnectorContext,
                 pacers: PacerPool) -> None:
        self.name = context.instance
        self._config = config
        self._context = context
        self._method, self._path = config.method_and_path
        if "{order_id}" not in self._path and config.action not in ("inventory", "price"):
            raise ConfigError(f"sink {self.name}: path must contain {{order_id}}",
                              field="path")
        self._client = ShopClient(
            shop=config.shop, action=config.action, base_url=config.base_url,
            auth=config.auth, timeouts=config.timeouts,
            pacer=pacers.get(config.shop, config.rate, config.burst),
            policy=ClientPolicy(max_attempts=config.max_attempts, backoff=config.backoff,
                                max_retry_after=config.max_retry_after,
                                max_inline_wait=config.max_inline_wait),
            metrics=RestShopMetrics.of(context.metrics.registry),
            max_response=config.max_response)
        self._stock = ShopStockReader(self._client, config.stock, context,
                                      base_url=config.base_url)

    def read_stock(self, pairs: Sequence[tuple[str, str]] | None) -> list[StockReading]:
        """StockReader: the shop's inventory levels (of ``pairs``; None: all it lists)."""
        return self._stock.read(pairs)

    def _where(self, envelope: Envelope) -> dict[str, Any]:
        return {"sink": self.name, "envelope_id": envelope.id, "shop": self._config.shop}

    def _request(self, envelope: Envelope) -> tuple[str, Any]:
        payload, where = envelope.payload, self._where(envelope)
        action = self._config.action
        if action == "inventory":
            body = {"sku": _field(payload, "sku", str, where),
                    "location_id": _field(payload, "location", (str, int), where),
                    "available": _field(payload, "available", int, where),
                    "version": _field(payload, "version", int, where)}
            return self._path, body
        if action == "price":
            body = {"sku": _field(payload, "sku", str, where),
                    "location_id": _field(payload, "location", (str, int), where),
                    "price": _field(payload, "price", str, where),
                    "currency": _field(payload, "currency", str, where),
                    "compare_at": payload.get("compare_at"),
                    "version": _field(payload, "version", int, where)}
            return self._path, body
        order_id = str(_field(payload, "order_id", (str, int), where))
        url = self._path.format(order_id=quote(order_id, safe=""))
        if action == "order_status":
            return url, {"order": {"id": order_id,
                                   "status": _field(payload, "status", str, where)}}
        lines = _field(payload, "lines", list, where)
        if action == "order_lines":
            return url, {"order_id": order_id, "reason": payload.get("reason"),
                         "line_items": [self._line_status(line, {**where, "line": i + 1})
                                        for i, line in enumerate(lines)]}
        if action == "cancel_lines":
            return url, {"external_ref": envelope.idempotency_key,
                         "currency": payload.get("currency"), "reason": payload.get("reason"),
                         "line_items": [self._cancel_line(line, {**where, "line": i + 1})
                                        for i, line in enumerate(lines)]}
        items = [{"sku": _field(line, "sku", str, {**where, "line": i + 1}),
                  "quantity": _field(line, "quantity", int, {**where, "line": i + 1})}
                 for i, line in enumerate(lines)]
        fulfilment = {"external_ref": envelope.idempotency_key, "line_items": items,
                      "tracking_number": payload.get("tracking_number"),
                      "tracking_company": payload.get("carrier")}
        return url, {"fulfillment": fulfilment}

    @staticmethod
    def _line_status(line: Any, where: dict[str, Any]) -> dict[str, Any]:
        status = _field(line, "status", str, where)
        if status not in _LINE_STATUSES:
            raise PermanentError(f"line status {status!r} is not one of "
                                 f"{', '.join(sorted(_LINE_STATUSES))}", field="status", **where)
        return {"sku": _field(line, "sku", str, where),
                "quantity": _field(line, "quantity", (int, str), where), "status": status,
                "line_no": line.get("line_no"), "location": line.get("location"),
                "expected_date": line.get("expected_date")}

    @staticmethod
    def _cancel_line(line: Any, where: dict[str, Any]) -> dict[str, Any]:
        refund = line.get("refund") if isinstance(line, dict) else None
        if refund is not None and not isinstance(refund, str):
            raise PermanentError("line field 'refund' is not decimal text", field="refund",
                                 **where)
        return {"sku": _field(line, "sku", str, where),
                "quantity": _field(line, "quantity", int, where),
                "line_no": line.get("line_no"), "refund": refund}

    def deliver(self, envelope: Envelope) -> None:
        url, body = self._request(envelope)
        header = self._config.idempotency_header
        idempotency = (header, envelope.idempotency_key) if header else None
        recheck = ((lambda: self.lookup(envelope))
                   if self._config.action == "fulfilment" else None)
        if idempotency is None and recheck is not None and envelope.attempt > 0 \
                and recheck():
            return  # an earlier try took effect; the shop cannot deduplicate a POST itself
        response = self._client.request(self._method, url, json=body, idempotency=idempotency,
                                        recheck=recheck, where=self._where(envelope))
        if response is not None:
            self._judge(response, envelope)

    def _judge(self, response: httpx.Response, envelope: Envelope) -> None:
        status = response.status_code
        if 200 <= status < 300:
            self._check_answer(response, envelope)
            return
        if status == 409 and self._config.action in ("inventory", "price"):
            self._context.log.info("rest_shop.inventory_stale", sink=self.name,
                                   envelope_id=envelope.id, shop=self._config.shop)
            return  # compare-and-set refused: the shop already has a newer version
        raise PermanentError(f"shop {self._config.shop} refused the {self._config.action}: "
                             f"{status} {response.reason_phrase}: {_reason(response)}",
                             status=status, **self._where(envelope))

    def _check_answer(self, response: httpx.Response, envelope: Envelope) -> None:
        """A 2xx counts only when its body is a JSON object holding ``answer_key`` (an
        object): an empty body or another shape is a TransientError naming what is missing
        (retried; the idempotency key or the lookup keeps the repeat single)."""
        key = self._config.answer_key
        if key is None:
            return
        try:
            data = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            data = None
            found = f"a non-JSON body: {response.text[:80]!r}"
        else:
            found = "an empty body" if data is None else (
                f"a JSON object with keys {sorted(data)[:5]}" if isinstance(data, dict)
                else f"a JSON {type(data).__name__}")
        if isinstance(data, dict) and isinstance(data.get(key), dict) and data[key]:
            return
        raise TransientError(f"shop {self._config.shop} answered {response.status_code} to "
                             f"the {self._config.action} with {found}, not an object with "
                             f"{key!r}: not counted as delivered", status=response.status_code,
                             missing=key, outcome="no_answer", **self._where(envelope))

    def lookup(self, envelope: Envelope) -> bool:
        """Did this envelope's effect already happen at the shop? Fulfilments: a fulfilment
        with ``external_ref`` = the idempotency key exists. Inventory and status updates are
        idempotent to repeat, so they answer False (send again)."""
        if self._config.action != "fulfilment":
            return False
        url, _ = self._request(envelope)
        response = self._client.request("GET", url, where=self._where(envelope))
        if response is None or response.status_code == 404:
            return False
        if response.status_code != 200:
            raise PermanentError(f"fulfilment lookup failed: {response.status_code}",
                                 status=response.status_code, **self._where(envelope))
        try:
            found = orjson.loads(response.content)["fulfillments"]
            return any(f.get("external_ref") == envelope.idempotency_key for f in found)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise TransientError(f"shop {self._config.shop}: the fulfilment lookup answered "
                                 f"200 without a 'fulfillments' list: {response.text[:80]!r}",
                                 missing="fulfillments", outcome="no_answer",
                                 **self._where(envelope)) from None

    def close(self) -> None:
        self._client.close()


def _reason(response: httpx.Response) -> str:
    """The shop's own error text, shortened (it names the field the shop did not like)."""
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:200]
    errors = data.get("errors", data) if isinstance(data, dict) else data
    return orjson.dumps(errors).decode()[:200]
