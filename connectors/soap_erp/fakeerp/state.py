"""What the fake ERP knows: stock per (material, plant, storage location), documents by number
and by external reference, a change log with sequence numbers, and every call it saw.

All of it behind one lock, so request threads and tests can look at any time. Postings are
**deduplicated by external reference**: a second posting with a known reference changes
nothing, answers with the first document and is counted in ``duplicates`` — so a test can
prove "exactly N documents, none twice" and see how often the sender repeated itself.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

__all__ = ["MOVEMENT_SIGNS", "Change", "Document", "ErpFault", "ErpState", "PriceChange",
           "StockRow"]

#: goods movement types the fake ERP knows: +1 receipt, -1 issue (SAP-style numbers;
#: 251: goods issue for a sale, 252: its reversal, 653: customer return into unrestricted stock)
MOVEMENT_SIGNS = {"101": 1, "252": 1, "501": 1, "653": 1, "701": 1, "201": -1, "251": -1, "261": -1,
                  "551": -1, "552": -1, "702": -1}

Location = tuple[str, str, str]  # material, plant, storage location


class ErpFault(Exception):
    """A fault the ERP answers with. ``kind``: ``client`` (the request is wrong) or ``server``
    (the ERP could not do it: a business rule or an outage); ``subcode`` is the SOAP 1.2
    subcode (1.1: appended to the code, ``Server.Deficit``); ``code`` goes in the detail."""

    def __init__(self, kind: str, message: str, *, code: str, subcode: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.subcode = subcode
        self.field = field


@dataclass
class StockRow:
    on_hand: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)

    @property
    def available(self) -> Decimal:
        return self.on_hand - self.reserved


@dataclass(frozen=True)
class Document:
    number: str
    type: str  # stock_posting, goods_movement, sales_order, reservation
    reference: str
    created: datetime
    value: Decimal = Decimal(0)


@dataclass(frozen=True)
class Change:
    sequence: int
    material: str
    plant: str
    location: str
    on_hand: Decimal
    available: Decimal
    document: str
    at: datetime


@dataclass(frozen=True)
class PriceChange:
    sequence: int
    material: str
    plant: str
    location: str
    price: Decimal
    currency: str
    valid_from: date


@dataclass
class ErpState:
    """The ERP's data plus what tests look at (``calls``, ``duplicates``)."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    stock: dict[Location, StockRow] = field(default_factory=dict)
    documents: dict[str, Document] = field(default_factory=dict)
    by_reference: dict[str, str] = field(default_factory=dict)
    duplicates: Counter[str] = field(default_factory=Counter)
    changes: list[Change] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    #: (time.monotonic(), operation, request bytes) of every call, in arrival order
    log: list[tuple[float, str, bytes]] = field(default_factory=list)
    check_deficit: bool = True
    #: called with the SinceSequence of each GetStockChanges before it is answered (tests hold
    #: a poll mid-way with it)
    on_changes: Callable[[int], None] | None = None
    #: reservation reference -> (where, quantity); released ones are in ``released``
    reservations: dict[str, tuple[Location, Decimal]] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    #: sales order reference -> line number -> (material, plant, quantity); cancelled lines
    sales_lines: dict[str, dict[int, tuple[str, str, Decimal]]] = field(default_factory=dict)
    cancelled_lines: dict[str, set[int]] = field(default_factory=dict)
    #: the price change log (GetPriceChanges)
    price_changes: list[PriceChange] = field(default_factory=list)
    _next_number: int = 4_900_000_000

    # -- tests and seeding --------------------------------------------------------------------
    def seed(self, material: str, plant: str, location: str, on_hand: Decimal | int) -> None:
        with self.lock:
            row = self.stock.setdefault((material, plant, location), StockRow())
            row.on_hand = Decimal(on_hand)
            self._log_change((material, plant, location), "0000000000")

    def set_price(self, material: str, plant: str, location: str, price: Decimal | str,
                  currency: str, valid_from: date) -> PriceChange:
        """A price change (valid from a date, which may lie ahead) into the change log."""
        with self.lock:
            change = PriceChange(len(self.price_changes) + 1, material, plant, location,
                                 Decimal(price), currency, valid_from)
            self.price_changes.append(change)
            return change

    def prices_since(self, sequence: int, rows: int) -> tuple[list[PriceChange], bool]:
        with self.lock:
            after = self.price_changes[max(0, sequence):]
            return after[:rows], len(after) > rows

    def document_count(self, kind: str | None = None) -> int:
        with self.lock:
            return sum(1 for d in self.documents.values() if kind is None or d.type == kind)

    def count(self, operation: str, containing: str | None = None) -> int:
        """Calls of ``operation`` (whose request contains ``containing``, if given)."""
        with self.lock:
            if containing is None:
                return self.calls[operation]
            return sum(1 for _, op, body in self.log
                       if op == operation and containing.encode() in body)

    def record(self, operation: str, request: bytes) -> None:
        with self.lock:
            self.calls[operation] += 1
            self.log.append((time.monotonic(), operation, request))

    # -- operations ----------------------------------------------------------------------------
    def _new_document(self, kind: str, reference: str, value: Decimal = Decimal(0)) -> Document:
        self._next_number += 1
        doc = Document(f"{self._next_number:010d}", kind, reference, datetime.now(UTC), value)
        self.documents[doc.number] = doc
        self.by_reference[reference] = doc.number
        return doc

    def _repeat(self, reference: str) -> Document | None:
        number = self.by_reference.get(reference)
        if number is None:
            return None
        self.duplicates[reference] += 1
        return self.documents[number]

    def _log_change(self, where: Location, document: str) -> None:
        row = self.stock[where]
        self.changes.append(Change(len(self.changes) + 1, *where, row.on_hand, row.available,
                                   document, datetime.now(UTC)))

    def post_movement(self, reference: str, where: Location, movement_type: str,
                      quantity: Decimal, *, kind: str = "stock_posting") -> tuple[Document, bool]:
        """Post a goods movement once per reference: (document, was it a repeat)."""
        sign = MOVEMENT_SIGNS.get(movement_type)
        if sign is None:
            raise ErpFault("server", f"Movement type {movement_type} is not defined",
                           code="M7-005", subcode="MovementType", field="MovementType")
        with self.lock:
            if (seen := self._repeat(reference)) is not None:
                return seen, True
            row = self.stock.setdefault(where, StockRow())
            if sign < 0 and self.check_deficit and quantity > row.available:
                missing = quantity - row.available
                raise ErpFault("server", f"Deficit of SL Unrestricted-use {missing} EA : "
                               f"{where[0]} {where[1]} {where[2]}", code="M7-021",
                               subcode="Deficit", field="Quantity")
            row.on_hand += sign * quantity
            doc = self._new_document(kind, reference)
            self._log_change(where, doc.number)
            return doc, False

    def reserve(self, reference: str, where: Location, quantity: Decimal) -> tuple[Document, bool]:
        with self.lock:
            if (seen := self._repeat(reference)) is not None:
                return seen, True
            row = self.stock.setdefault(where, StockRow())
            if quantity > row.available:
                raise ErpFault("server", f"Only {row.available} EA of {where[0]} available in "
                               f"{where[1]}/{where[2]}", code="V1-420", subcode="Deficit",
                               field="Quantity")
            row.reserved += quantity
            self.reservations[reference] = (where, quantity)
            doc = self._new_document("reservation", reference)
            self._log_change(where, doc.number)
            return doc, False

    def create_sales_order(self, reference: str, value: Decimal,
                           lines: dict[int, tuple[str, str, Decimal]] | None = None
                           ) -> tuple[Document, bool]:
        with self.lock:
            if (seen := self._repeat(reference)) is not None:
                return seen, True
            self.sales_lines[reference] = dict(lines or {})
            return self._new_document("sales_order", reference, value), False

    def release(self, reference: str, reservation: str) -> tuple[Document, bool]:
        """Release a reservation (the reverse of :meth:`reserve`) once per ``reference``; a
        reservation released before (under another reference) is not released twice."""
        with self.lock:
            if (seen := self._repeat(reference)) is not None:
                return seen, True
            if reservation not in self.reservations:
                raise ErpFault("server", f"No reservation {reservation}", code="V1-404",
                               subcode="NotFound", field="ReservationReference")
            where, quantity = self.reservations[reservation]
            if reservation not in self.released:
                self.released.add(reservation)
                self.stock[where].reserved -= quantity
            doc = self._new_document("release", reference)
            self._log_change(where, doc.number)
            return doc, False

    def cancel_lines(self, reference: str, order: str, lines: list[int]) -> tuple[Document, int]:
        """Cancel lines of a sales order once per ``reference``: (document, open lines left)."""
        with self.lock:
            if order not in self.sales_lines:
                raise ErpFault("server", f"No sales order {order}", code="V1-404",
                               subcode="NotFound", field="SalesOrderReference")
            known = self.sales_lines[order]
            unknown = [n for n in lines if n not in known]
            if unknown:
                raise ErpFault("client", f"Sales order {order} has no line {unknown[0]}",
                               code="V1-405", field="LineNo")
            seen = self._repeat(reference)
            cancelled = self.cancelled_lines.setdefault(order, set())
            if seen is None:
                cancelled.update(lines)
            return seen or self._new_document("sales_order_change", reference), \
                len(known) - len(cancelled)

    def open_lines(self, order: str) -> dict[int, tuple[str, str, Decimal]]:
        """The sales order's lines that are not cancelled (KeyError: no such sales order)."""
        with self.lock:
            gone = self.cancelled_lines.get(order, set())
            return {n: line for n, line in self.sales_lines[order].items() if n not in gone}

    def open_reservations(self) -> dict[str, tuple[Location, Decimal]]:
        """Reservations not released."""
        with self.lock:
            return {r: v for r, v in self.reservations.items() if r not in self.released}

    def find(self, reference: str) -> Document | None:
        with self.lock:
            number = self.by_reference.get(reference)
            return self.documents[number] if number else None

    def query(self, material: str, plant: str, location: str | None) -> list[tuple[Location,
                                                                                  StockRow]]:
        with self.lock:
            return [(k, StockRow(r.on_hand, r.reserved)) for k, r in sorted(self.stock.items())
                    if k[0] == material and k[1] == plant and location in (None, k[2])]

    def changes_since(self, sequence: int, rows: int) -> tuple[list[Change], bool]:
        """Changes after ``sequence`` (at most ``rows``) and whether more wait."""
        if self.on_changes is not None:
            self.on_changes(sequence)
        with self.lock:
            after = self.changes[max(0, sequence):]
            return after[:rows], len(after) > rows
