"""A POS lane simulator: sale lines and daily files as a till writes them (tests, benchmark,
trying the connector by hand).

``SalesGenerator`` makes deterministic random sale lines (``random.Random(seed)``) in the
``daily_sales`` layout's shape; :func:`write_daily_file` streams a whole file to disk without
holding its records. :class:`SlowWriter` writes a file the way tills do — in chunks split
anywhere (mid-line), re-opening the file for each chunk, pausing between — under one of three
disciplines matching the readiness policies: ``rename`` (temp name, rename at the end),
``marker`` (final name, then a done file) or ``direct`` (final name only). If anyone moves the
file away before the writer is done, the next re-open fails and the writer records an *early
pickup*: the exact event the readiness policies must prevent.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from connectors.pos_file.parser import Layout, Record
from connectors.pos_file.render import render_line, with_trailer

__all__ = ["SalesGenerator", "SlowWriter", "WriteReport", "daily_file_bytes", "write_daily_file"]

_TENDERS = ("CASH", "CARD", "VOUCHER", "MOBILE")
_ITEMS = ("4006381333931", "4006381333948", "5901234123457")  # in mappings/xref/sku.csv
_ENDINGS = {"crlf": "\r\n", "lf": "\n", "cr": "\r"}


class SalesGenerator:
    """Deterministic sale lines for one store's lanes (record ``sale_line`` of daily_sales)."""

    def __init__(self, seed: int, *, lanes: int = 4, day: date = date(2024, 3, 1)) -> None:
        self._rng = random.Random(seed)
        self._lanes, self._day = lanes, day
        self._receipt = 0
        self._line = 0

    def sale_line(self, number: int) -> Record:
        """The ``number``-th sale line of the day (receipts of 1..n lines)."""
        rng = self._rng
        if number == 1 or rng.random() < 0.3 or self._line >= 9999:
            self._receipt += 1
            self._line = 0
        self._line += 1
        qty = Decimal(rng.choice((1, 1, 1, 2, 3, -1)))
        price = Decimal(rng.randrange(10, 50_000)).scaleb(-2)
        discount = Decimal(rng.randrange(0, 200)).scaleb(-2) if rng.random() < 0.2 else None
        amount = qty * price - (discount or 0)
        moment = datetime.combine(self._day, datetime.min.time()) + timedelta(
            seconds=rng.randrange(8 * 3600, 21 * 3600))
        return Record("sale_line", {
            "lane": f"{rng.randrange(1, self._lanes + 1):03d}",
            "receipt": f"{self._receipt:06d}", "line": f"{self._line:04d}",
            "ts": moment.strftime("%Y%m%d %H%M%S"), "item": rng.choice(_ITEMS),
            "qty": qty, "unit_price": price, "discount": discount,
            "tender": rng.choice(_TENDERS), "void": "Y" if rng.random() < 0.02 else "N",
            "amount": amount.quantize(Decimal("0.01"))})

    def sale_lines(self, count: int) -> Iterator[Record]:
        for line in range(1, count + 1):
            yield self.sale_line(line)


def _header(store: str, day: date, seq: int) -> dict[str, Any]:
    return {"store": store, "business_date": day, "file_seq": seq,
            "created": day.strftime("%Y%m%d") + " 235900"}


def _file_lines(layout: Layout, store: str, records: int, seed: int, day: date,
                seq: int) -> Iterator[str]:
    lines = SalesGenerator(seed, day=day).sale_lines(records)
    for record in with_trailer(layout, _header(store, day, seq), lines):
        yield render_line(layout, record)


def daily_file_bytes(layout: Layout, *, store: str, records: int, seed: int = 1,
                     day: date = date(2024, 3, 1), seq: int = 1) -> bytes:
    """A complete daily sales file in memory (small files: tests)."""
    ending = _ENDINGS[layout.spec.line_ending]
    text = "".join(line + ending for line in _file_lines(layout, store, records, seed, day, seq))
    return text.encode(layout.encoding)


def write_daily_file(path: Path, layout: Layout, *, store: str, records: int, seed: int = 1,
                     day: date = date(2024, 3, 1), seq: int = 1) -> str:
    """Stream a daily sales file to ``path`` (constant memory); returns its sha256."""
    ending = _ENDINGS[layout.spec.line_ending]
    digest = hashlib.sha256()
    with path.open("wb") as out:
        block: list[str] = []
        for line in _file_lines(layout, store, records, seed, day, seq):
            block.append(line + ending)
            if len(block) == 4096:
                data = "".join(block).encode(layout.encoding)
                out.write(data)
                digest.update(data)
                block = []
        data = "".join(block).encode(layout.encoding)
        out.write(data)
        digest.update(data)
    return digest.hexdigest()


@dataclass
class WriteReport:
    """What the writer saw: chunks written, and the chunk at which the file vanished (None: it
    never did, i.e. no early pickup)."""

    name: str
    chunks: int = 0
    vanished_at: int | None = None
    sha256: str = ""


class SlowWriter:
    """Writes ``data`` to ``inbox/name`` in ``chunks`` pieces, ``pause`` seconds apart."""

    def __init__(self, inbox: Path, name: str, data: bytes, *, chunks: int, pause: float,
                 discipline: Literal["rename", "marker", "direct"],
                 temp_prefix: str = ".", marker_suffix: str = ".done") -> None:
        self.inbox, self.name, self.data = inbox, name, data
        self.chunks, self.pause, self.discipline = chunks, pause, discipline
        self.temp_prefix, self.marker_suffix = temp_prefix, marker_suffix
        self.report = WriteReport(name, sha256=hashlib.sha256(data).hexdigest())

    def run(self, stop: threading.Event | None = None) -> WriteReport:
        """Write the file (blocking); returns the report."""
        stop = stop or threading.Event()
        target = self.inbox / self.name
        writing = target.with_name(self.temp_prefix + target.name) \
            if self.discipline == "rename" else target  # ".NAME" still matches "*.DAT"
        size = len(self.data)
        bounds = [size * i // self.chunks for i in range(self.chunks + 1)]
        for index in range(self.chunks):
            flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if index == 0 else 0)
            try:
                fd = os.open(writing, flags, 0o644)
            except FileNotFoundError:
                self.report.vanished_at = index  # somebody took the file before it was whole
                return self.report
            try:
                os.write(fd, self.data[bounds[index]:bounds[index + 1]])
            finally:
                os.close(fd)
            self.report.chunks = index + 1
            if index + 1 < self.chunks and stop.wait(self.pause):
                return self.report
        if self.discipline == "rename":
            os.rename(writing, target)
        elif self.discipline == "marker":
            (self.inbox / (self.name + self.marker_suffix)).touch()
        return self.report
