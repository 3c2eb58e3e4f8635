"""Pass two: records → envelopes, a window at a time, from where the file ledger stopped.

One envelope per detail record: type from the layout, payload = the record's published fields as
JSON values (decimals as strings, dates ISO) plus the ``from_header`` fields, idempotency key
``pos:<store>:<sha256>:<line>``, source reference ``{file, line, store}``. This module only reads:
the runtime publishes each window and then calls the file's ack (``ingest.FileRun``), which
moves the ledger. The next window is parsed on a helper thread while the runtime waits for the
broker's confirms; after a window that was not wholly taken the file is read again from the
ledger's resume point (:meth:`FileWindows.rewind`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import date, time
from decimal import Decimal
from typing import Any, BinaryIO

from connectors.pos_file.dispose import Claimed
from connectors.pos_file.ledger import FileEntry
from connectors.pos_file.parser import Layout, Record
from connectors.pos_file.scan import Item, Scan, iter_records
from integration_bus.connector import Envelope

__all__ = ["Checkpoint", "FileWindows", "Window", "WindowReader", "json_value"]

Checkpoint = Callable[[str, Mapping[str, Any]], None]
"""Called at each named point of a file's life (tests crash the source there)."""

Window = tuple[list[tuple[Item, Envelope | None]], bool]
"""A window's lines in file order, each with its envelope (None: a bad line, or a record that
is not published), and whether it is the file's last."""


def json_value(value: Any) -> Any:
    """A parsed value as JSON: Decimal → plain decimal string, date/time → ISO text."""
    kind = type(value)
    if kind is str or kind is int:  # most fields: nothing to convert (once per field and line)
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date | time):
        return value.isoformat()
    return value


class WindowReader:
    """Turns a layout's records into envelopes; one per source, shared by its files."""

    def __init__(self, *, source: str, layout: Layout, window: int) -> None:
        self.source, self._layout, self._window = source, layout, window
        self._published_fields = {
            name: tuple(c.name for c in codec.codecs if c.spec.publish)
            for name, codec in layout.records.items()}
        self._batch_header = layout.batch_header.name if layout.batch_header else None
        self._batched = any(r.spec.from_batch for r in layout.records.values())

    def open(self, claimed: Claimed, handle: BinaryIO, scan: Scan,
             entry: FileEntry) -> FileWindows:
        """The windows of ``claimed`` from ``entry``'s resume point (parsing starts now)."""
        return FileWindows(self, claimed, handle, scan, entry)

    def windows(self, claimed: Claimed, handle: BinaryIO, scan: Scan,
                entry: FileEntry) -> Callable[[], Window]:
        """A function returning the next window each call, from ``entry``'s resume point."""
        inherited = self._inherited(scan.header)
        key_prefix = f"pos:{claimed.store}:{scan.sha256}:"
        items = self._items(handle, claimed.name, entry.next_line, entry.next_offset)
        batch_header, window = self._batch_header, self._window
        from_batch: dict[str, Any] = {}

        def next_window() -> Window:
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
                if len(batch) >= window:
                    return batch, False
            return batch, True

        return next_window

    def _items(self, handle: BinaryIO, file: str, resume_line: int,
               resume: int) -> Iterator[tuple[Item, bool]]:
        """The records to publish from the resume point (line, byte offset), each with
        ``True``; a layout whose details inherit batch header fields is read from the top so
        that a resume in the middle of a batch knows its header (the records before are
        ``False``)."""
        start, line = (0, 0) if self._batched else (resume, resume_line)
        for item in iter_records(handle, self._layout, file=file, offset=start, line=line):
            yield item, item.end > resume

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
        message_type = codec.spec.type
        assert message_type is not None  # a detail record always has one (layout validation)
        return Envelope.create(message_type, payload, source=self.source,
                               idempotency_key=key_prefix + str(item.line),
                               headers={"source_ref": {"file": claimed.name, "line": item.line,
                                                       "store": claimed.store}})


class FileWindows:
    """One claimed file's windows, read ahead by one on a helper thread (only the helper
    advances the file, so windows stay in order). Owned by the source's thread;
    ``close()`` ends the helper."""

    def __init__(self, reader: WindowReader, claimed: Claimed, handle: BinaryIO, scan: Scan,
                 entry: FileEntry) -> None:
        self._reader, self._claimed, self._handle = reader, claimed, handle
        self._scan, self._entry = scan, entry
        self._helper = ThreadPoolExecutor(1, thread_name_prefix=f"{reader.source}-parse")
        self._next = reader.windows(claimed, handle, scan, entry)
        self._upcoming: Future[Window] | None = self._helper.submit(self._next)

    def take(self) -> Window:
        """The next window (a parse error is raised here); the one after it starts parsing at
        once. After the last window, only :meth:`rewind` gives more."""
        if self._upcoming is None:
            raise RuntimeError("the file's last window was taken already")
        window = self._upcoming.result()
        self._upcoming = None if window[1] else self._helper.submit(self._next)
        return window

    def rewind(self) -> None:
        """Read again from the ledger entry's resume point (after a window that was not
        wholly taken): what was parsed ahead is dropped."""
        if self._upcoming is not None:
            self._upcoming.cancel()
            wait([self._upcoming])  # a parse in progress moves the handle: let it finish
        self._next = self._reader.windows(self._claimed, self._handle, self._scan, self._entry)
        self._upcoming = self._helper.submit(self._next)

    def close(self) -> None:
        """End the helper (a parse in progress is waited for). Idempotent."""
        self._helper.shutdown(wait=True, cancel_futures=True)
