"""Pass two: records → envelopes → windows published with confirms → progress in the ledger.

One envelope per detail record: type from the layout, payload = the record's published fields as
JSON values (decimals as strings, dates ISO) plus the ``from_header`` fields, idempotency key
``pos:<store>:<sha256>:<line>``, source reference ``{file, line, store}``. A window's outcomes are
walked in file order; progress (the next line and byte offset, counts) moves only over records
that were confirmed or dead-lettered, and stops at the first transient failure, so whatever the
ledger says was done was done. Bad and unroutable records, and records whose envelope cannot
travel (UnpublishableError: over ``broker.max_message``), go to the dead-letter store with
file:line and the raw line, each on its own: the rest of the window is published.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import date, time
from decimal import Decimal
from typing import Any, BinaryIO, Literal

from connectors.pos_file.dispose import Claimed
from connectors.pos_file.errors import ParseError
from connectors.pos_file.ledger import FileEntry, FileLedger
from connectors.pos_file.metrics import PosFileMetrics
from connectors.pos_file.parser import Layout, Record
from connectors.pos_file.scan import Item, Scan, iter_records
from integration_bus.connector import (
    BusError,
    ConnectorContext,
    Envelope,
    PermanentError,
    Publisher,
)

__all__ = ["Checkpoint", "WindowPublisher", "json_value"]

Checkpoint = Callable[[str, Mapping[str, Any]], None]
"""Called at each named point of a file's life (tests crash the source there)."""
Progress = Literal["done", "failed", "stopped"]


def json_value(value: Any) -> Any:
    """A parsed value as JSON: Decimal → plain decimal string, date/time → ISO text."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date | time):
        return value.isoformat()
    return value


class WindowPublisher:
    """Publishes one claimed file's records from where its ledger entry stopped."""

    def __init__(self, *, context: ConnectorContext, layout: Layout, ledger: FileLedger,
                 metrics: PosFileMetrics, window: int, checkpoint: Checkpoint) -> None:
        self._context, self._layout, self._ledger = context, layout, ledger
        self._metrics, self._window, self._checkpoint = metrics, window, checkpoint
        self._source = context.instance
        self._published_fields = {
            name: tuple(c.name for c in codec.codecs if c.spec.publish)
            for name, codec in layout.records.items()}

    def run(self, claimed: Claimed, handle: BinaryIO, scan: Scan, entry: FileEntry,
            publisher: Publisher, stop: threading.Event) -> Progress:
        """Publish to the end of the file: ``done``, ``failed`` (a transient publish failure;
        the ledger holds what was confirmed) or ``stopped``.

        The next window is parsed and turned into envelopes on a helper thread while this one
        waits for the broker (only the helper advances the file; windows stay in order)."""
        inherited = self._inherited(scan.header)
        key_prefix = f"pos:{claimed.store}:{scan.sha256}:"
        items = self._items(handle, claimed.name, entry)
        batch_header = self._layout.batch_header.name if self._layout.batch_header else None
        from_batch: dict[str, Any] = {}

        def next_window() -> list[tuple[Item, Envelope | None]]:
            nonlocal from_batch
            batch: list[tuple[Item, Envelope | None]] = []
            for item, publish in items:
                record = item.record
                if record is not None and record.name == batch_header:
                    from_batch = {f: json_value(v) for f, v in record.values.items()}
                if not publish:
                    continue  # before the resume point: only read for its batch header
                envelope = None
                if record is not None and record.name in inherited:
                    envelope = self._envelope(claimed, item, record, inherited, key_prefix,
                                              from_batch)
                batch.append((item, envelope))
                if len(batch) >= self._window:
                    break
            return batch

        with ThreadPoolExecutor(1, thread_name_prefix=f"{self._source}-parse") as helper:
            upcoming = helper.submit(next_window)
            while batch := upcoming.result():
                upcoming = helper.submit(next_window)
                if not self._flush(claimed, entry, batch, publisher):
                    return "failed"
                if stop.is_set():
                    return "stopped"
        return "done"

    def _items(self, handle: BinaryIO, file: str,
               entry: FileEntry) -> Iterator[tuple[Item, bool]]:
        """The records to publish from the entry's resume point, each with ``True``; a layout
        whose details inherit batch header fields is read from the top so that a resume in
        the middle of a batch knows its header (the records before are ``False``)."""
        batched = any(r.spec.from_batch for r in self._layout.records.values())
        start, line = (0, 0) if batched else (entry.next_offset, entry.next_line)
        for item in iter_records(handle, self._layout, file=file, offset=start, line=line):
            yield item, item.end > entry.next_offset

    def _inherited(self, header: Record | None) -> dict[str, dict[str, Any]]:
        """Per detail record name: the header values its payload carries."""
        values = header.values if header is not None else {}
        return {name: {f: json_value(values.get(f)) for f in codec.spec.from_header}
                for name, codec in self._layout.records.items() if codec.spec.role == "detail"}

    def _envelope(self, claimed: Claimed, item: Item, record: Record,
                  inherited: dict[str, dict[str, Any]], key_prefix: str,
                  from_batch: dict[str, Any]) -> Envelope:
        values = record.values
        payload = {name: json_value(values[name]) for name in self._published_fields[record.name]}
        payload.update(inherited[record.name])
        codec = self._layout.records[record.name]
        for name in codec.spec.from_batch:
            payload[name] = from_batch.get(name)
        message_type = self._layout.records[record.name].spec.type
        assert message_type is not None  # a detail record always has one (layout validation)
        return Envelope.create(message_type, payload, source=self._source,
                               idempotency_key=key_prefix + str(item.line),
                               headers={"source_ref": {"file": claimed.name, "line": item.line,
                                                       "store": claimed.store}})

    def _flush(self, claimed: Claimed, entry: FileEntry,
               batch: list[tuple[Item, Envelope | None]], publisher: Publisher) -> bool:
        envelopes = [env for _, env in batch if env is not None]
        outcomes = iter(publisher.publish_many(envelopes) if envelopes else [])
        confirmed = rejected = 0
        done: Item | None = None
        failure: BusError | None = None
        for item, envelope in batch:
            if envelope is None:
                if item.error is not None:
                    self._reject(claimed, item, item.error)
                    rejected += 1
                done = item
                continue
            outcome = next(outcomes)
            if outcome is None:
                confirmed += 1
            elif isinstance(outcome, PermanentError):
                self._reject(claimed, item, outcome)
                rejected += 1
            else:
                failure = outcome
                break
            done = item
        if done is not None:
            self._checkpoint("confirmed", {"file": claimed.name, "line": done.line,
                                           "confirmed": entry.confirmed + confirmed})
            entry.confirmed += confirmed
            entry.rejected += rejected
            entry.next_line, entry.next_offset = done.line, done.end
            self._ledger.put(entry)
            self._checkpoint("saved", {"file": claimed.name, "line": done.line,
                                       "confirmed": entry.confirmed})
        self._metrics.records.labels(self._source, "published").inc(confirmed)
        if rejected:
            self._metrics.records.labels(self._source, "rejected").inc(rejected)
        if failure is not None:
            self._context.log.warning("pos_file.publish_failed", file=claimed.name,
                                      line=entry.next_line + 1, error=str(failure))
            return False
        return True

    def _reject(self, claimed: Claimed, item: Item, error: BusError) -> None:
        where = {"file": claimed.name, "line": item.line, "store": claimed.store}
        if isinstance(error, ParseError):
            error.with_context(file=claimed.name, line=item.line)
        else:
            error.with_context(**where)
        self._context.reject(item.raw, error, where)
