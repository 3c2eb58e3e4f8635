"""The ERP poll: one operation asked for what changed after a cursor, page by page.

A :class:`SoapPoller` is a ``PollingSource``: the runtime runs ``poll()`` every ``interval``
(``bus run``; celery beat in ``bus scheduler``), at most one at a time per source (a lease in the
store). One poll:

1. reads the cursor (``start`` the first time) and calls the operation with it
   (``cursor_param``) and the page size (``page_size_param``);
2. turns each item of ``items`` into an envelope of ``type`` whose idempotency key is
   ``<source>:<operation>:<position>`` — the same change always gets the same key;
3. stages the page's envelopes **together with** the cursor they reach (the last item's
   ``position``) through ``ConnectorContext.stage``: one transaction, published later by the
   outbox relay with confirms. A crash can neither lose a fetched change nor move the cursor
   past it; a crash after publishing but before the cursor (a lost cursor) only repeats
   envelopes with the same keys, which the route's ledger records as duplicates;
4. continues while ``more`` says so (or, without ``more``, while pages are full), up to
   ``max_pages``.

Positions must increase: an item at or before the cursor is refused (PermanentError naming
source, operation and position) rather than risking a loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from connectors.soap_erp.breaker import CircuitBreaker
from connectors.soap_erp.client import SoapClient
from connectors.soap_erp.config import PollConfig, SoapErpSourceConfig
from connectors.soap_erp.elements import check_path
from connectors.soap_erp.metrics import SoapMetrics
from connectors.soap_erp.payload import get_path, set_path
from connectors.soap_erp.stock import ErpStockReader
from integration_bus.connector import (
    ConfigError,
    ConnectorContext,
    Envelope,
    PermanentError,
    StockReading,
)

__all__ = ["CURSOR_KEY", "SoapPoller"]

CURSOR_KEY = "position"


def _order(value: Any) -> tuple[int, Decimal | str]:
    """A sort key for positions: numbers numerically, anything else as text."""
    try:
        return 0, Decimal(str(value))
    except ArithmeticError:
        return 1, str(value)


class SoapPoller:
    """A PollingSource over one ERP operation (see the module docstring); also a StockReader
    (``bus reconcile``, see ``connectors.soap_erp.stock``)."""

    def __init__(self, config: SoapErpSourceConfig, context: ConnectorContext, *,
                 document: Any, breaker: Any) -> None:
        self.name = context.instance
        self.interval_ms = config.poll.interval
        self._poll = config.poll
        self._context = context
        try:
            self._client = SoapClient(config, document=document, breaker=breaker,
                                      metrics=SoapMetrics.of(context.metrics.registry),
                                      resolve=context.resolve, pool_size=1)
        except ConfigError as exc:
            exc.with_context(source=self.name)
            raise
        try:
            self._op = self._client.operation(config.poll.operation, field="poll.operation")
            self._check_paths(config.poll)
        except ConfigError as exc:
            self._client.close()
            exc.with_context(source=self.name)
            raise
        self._stock = ErpStockReader(self._client, config.stock, context)

    def _check_paths(self, poll: PollConfig) -> None:
        """Every path of ``poll`` resolves in the operation's types, to the leaf."""
        op = self._op
        for path, field in ((poll.cursor_param, "poll.cursor_param"),
                            (poll.page_size_param, "poll.page_size_param")):
            if path is not None:
                check_path(op.binding_op.input, path, operation=op.name, field=field)
        if poll.more is not None:
            check_path(op.binding_op.output, poll.more, operation=op.name, field="poll.more",
                       direction="response")
        item = check_path(op.binding_op.output, poll.items, operation=op.name,
                          field="poll.items", direction="response")
        if item is not None:
            check_path(op.binding_op.output, poll.position, operation=op.name,
                       field="poll.position", direction="response", within=item)

    @property
    def breaker(self) -> CircuitBreaker:
        return self._client.breaker

    def _request(self, cursor: str) -> dict[str, Any]:
        request = set_path({}, self._poll.cursor_param, cursor)
        if self._poll.page_size_param is not None:
            request = set_path(request, self._poll.page_size_param, self._poll.page_size)
        return request

    def _items(self, answer: dict[str, Any], cursor: str) -> list[tuple[str, Any]]:
        found = get_path(answer, self._poll.items)
        items = [] if found is None else found if isinstance(found, list) else [found]
        out: list[tuple[str, Any]] = []
        last = _order(cursor)
        for item in items:
            position = get_path(item, self._poll.position)
            if position is None or _order(position) <= last:
                raise PermanentError(f"{self._op.name}: an item's {self._poll.position} "
                                     f"({position!r}) does not come after {cursor!r}",
                                     source=self.name, operation=self._op.name,
                                     field=self._poll.position, position=position)
            last = _order(position)
            out.append((str(position), item))
        return out

    def poll(self) -> int:
        """One round; how many envelopes it staged. Raises BusError when the ERP fails (the
        runtime logs it and polls again next round)."""
        cursor = self._context.cursors.get(CURSOR_KEY) or self._poll.start
        staged = 0
        for page in range(1, self._poll.max_pages + 1):
            answer = self._client.call(self._op, self._request(cursor), source=self.name,
                                       cursor=cursor)
            items = self._items(answer, cursor)
            if items:
                envelopes = [Envelope.create(
                    self._poll.type, item, source=self.name,
                    idempotency_key=f"{self.name}:{self._op.name}:{position}",
                    headers={"source_ref": {"operation": self._op.name, "position": position,
                                            "page": page}})
                    for position, item in items]
                cursor = items[-1][0]
                self._context.stage(envelopes, (CURSOR_KEY, cursor))
                staged += len(envelopes)
            more = get_path(answer, self._poll.more) if self._poll.more else \
                len(items) >= self._poll.page_size
            if not items or not more:
                break
        return staged

    def read_stock(self, pairs: Sequence[tuple[str, str]] | None) -> list[StockReading]:
        """StockReader: the ERP's levels of ``pairs`` (one stock query per material, plant)."""
        return self._stock.read(pairs)

    def close(self) -> None:
        self._client.close()
