"""One claimed file, from processing/ to its final folder: the crash-safe state machine.

    claimed ─ open safely ─ scan (hash, validate, control totals) ─┬─ bad ──────> error/
                                                                   ├─ seen ─────> duplicate/
                                                                   └─ windows (ack: ledger)
                                                                        └─ published ─> archive/

:meth:`Ingestor.begin` opens and scans a claimed file and hands back a :class:`FileRun`: its
windows as ``SourceBatch`` es. The runtime publishes each window with confirms and only then
calls its ack, which walks the outcomes in file order: progress (the next line and byte offset,
counts) moves only over records that were confirmed or dead-lettered, and stops at the first
record the broker did not take, so whatever the ledger says was done was done; the file is read
again from there. Bad and unroutable records, and records whose envelope cannot travel
(UnpublishableError: over ``broker.max_message``), go to the dead-letter store with file:line and
the raw line, each on its own. The ack of the last window marks the file published and archives
it.

The same code resumes a file after a crash: the scan finds the ledger entry by (store, sha256),
and publishing continues from the entry's line and offset. Named checkpoints (``claimed``,
``scanned``, ``confirmed``, ``saved``, ``published``, ``moved``) mark the points between durable
steps; tests kill the source at each of them. What a crash at each leaves behind, and why a
restart neither loses nor doubles anything, is in docs/pos-file.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from connectors.pos_file.config import PosFileSourceConfig
from connectors.pos_file.dispose import Claimed, Disposer
from connectors.pos_file.errors import ParseError, RefusedEntry
from connectors.pos_file.inbox import open_claimed
from connectors.pos_file.ledger import FileEntry, FileLedger
from connectors.pos_file.metrics import PosFileMetrics
from connectors.pos_file.parser import Layout
from connectors.pos_file.scan import Item, Scan, scan_file
from connectors.pos_file.windows import Checkpoint, FileWindows, WindowReader
from integration_bus.connector import (
    BusError,
    ConnectorContext,
    Envelope,
    PermanentError,
    SourceBatch,
)

__all__ = ["FileRun", "Ingestor", "Parts"]


@dataclass(frozen=True)
class Parts:
    """What the ingestor and its file runs share (one set per source)."""

    context: ConnectorContext
    ledger: FileLedger
    disposer: Disposer
    metrics: PosFileMetrics
    checkpoint: Checkpoint


class Ingestor:
    """Takes claimed files through the scan to their windows. Owned by one source thread."""

    def __init__(self, *, config: PosFileSourceConfig, layout: Layout, parts: Parts) -> None:
        self._config, self._layout, self._parts = config, layout, parts
        self._ledger, self._disposer = parts.ledger, parts.disposer
        self._checkpoint = parts.checkpoint
        self._reader = WindowReader(source=parts.context.instance, layout=layout,
                                    window=config.window)

    def begin(self, claimed: Claimed) -> FileRun | None:
        """Open and scan ``claimed``: None when that already settled it (refused, given back,
        quarantined, a duplicate), else the run that publishes and archives it."""
        self._checkpoint("claimed", {"file": claimed.name})
        try:
            handle = open_claimed(claimed.folder, claimed.name, claimed.st,
                                  max_size=self._config.max_file_size)
        except RefusedEntry as exc:
            self._disposer.refuse(claimed.inbox, claimed.folder, claimed.name, exc)
            return None
        try:
            run = self._scanned(claimed, handle)
        except BaseException:
            handle.close()
            raise
        if run is None:
            handle.close()
        return run

    def _scanned(self, claimed: Claimed, handle: BinaryIO) -> FileRun | None:
        before = os.fstat(handle.fileno())
        if before.st_size == 0:
            self._disposer.refuse(claimed.inbox, claimed.folder, claimed.name, RefusedEntry(
                "the file is empty (0 bytes)", reason="empty", file=claimed.name))
            return None
        scan = scan_file(handle, self._layout, file=claimed.name,
                         max_bad=self._config.max_bad_records,
                         all_or_nothing=self._config.on_bad_record == "quarantine_file")
        if _changed(handle, before) or scan.size != before.st_size:
            self._disposer.give_back(claimed, "it changed while it was being read")
            return None
        self._checkpoint("scanned", {"file": claimed.name, "sha256": scan.sha256})
        if scan.error is not None:
            self.quarantine(claimed, scan, scan.error)
            return None
        entry = self._entry(claimed, scan)
        if entry is None:
            return None
        windows = self._reader.open(claimed, handle, scan, entry) \
            if entry.state == "publishing" else None
        return FileRun(self._parts, claimed, handle, before, scan, entry, windows)

    def _entry(self, claimed: Claimed, scan: Scan) -> FileEntry | None:
        """The ledger entry to continue with, or None when the file is a duplicate."""
        entry = self._ledger.get(claimed.store, scan.sha256)
        here = str(claimed.path)
        work = claimed.inbox.work
        if entry is None or entry.state == "quarantined":  # new, or worth another look
            entry = FileEntry(store=claimed.store, sha256=scan.sha256, name=claimed.name,
                              size=scan.size, node=self._config.node, claimed_as=here,
                              records=scan.details)
        elif entry.state != "archived" and entry.claimed_as != here:
            if entry.state == "published" and entry.archive_as and \
                    work.holds(entry.archive_as) and not work.holds(entry.claimed_as):
                entry.state = "archived"  # a crash came between the move and recording it
                self._ledger.put(entry)
            elif not work.holds(entry.claimed_as):
                entry.claimed_as = here  # its earlier claim is gone: go on where it stopped
        if entry.state == "archived" or entry.claimed_as != here:
            self._disposer.duplicate(claimed, scan.sha256, {
                "first_seen_as": entry.name, "first_state": entry.state})
            return None
        self._ledger.put(entry)
        return entry

    def quarantine(self, claimed: Claimed, scan: Scan, error: ParseError) -> None:
        self._disposer.quarantine(claimed, error, sha256=scan.sha256,
                                  extra={"bad_records": scan.bad, "first_errors": scan.errors})
        entry = self._ledger.get(claimed.store, scan.sha256) or FileEntry(
            store=claimed.store, sha256=scan.sha256, name=claimed.name, size=scan.size,
            node=self._config.node, claimed_as=str(claimed.path), records=scan.details)
        if entry.state != "archived":  # a bad copy of a good file must not hide the good one
            entry.state, entry.reason = "quarantined", str(error)
            self._ledger.put(entry)


class FileRun:
    """A scanned file's windows as batches for the runtime, and their acks. ``done`` once the
    file is archived or quarantined; ``close()`` (idempotent) leaves it in processing/ to be
    resumed from the ledger."""

    def __init__(self, parts: Parts, claimed: Claimed, handle: BinaryIO,
                 before: os.stat_result, scan: Scan, entry: FileEntry,
                 windows: FileWindows | None) -> None:
        self._parts, self.claimed, self._handle = parts, claimed, handle
        self._before, self._scan, self._entry, self._windows = before, scan, entry, windows
        self._rewind = False  # set when the window handed out last was not wholly taken
        self.done = False

    def next_batch(self) -> SourceBatch | None:
        """The next window and its ack; None once the file is done. A window whose ack never
        came (stop, a publish that raised) counts as not taken: it is read again."""
        if self.done:
            return None
        windows = self._windows
        if windows is None:  # published before a restart: only the move is left
            return SourceBatch((), self._ack_end)
        if self._rewind:
            windows.rewind()
        batch, last = windows.take()
        envelopes = [env for _, env in batch if env is not None]
        self._rewind = True  # until its ack says otherwise

        def ack(outcomes: Sequence[BusError | None]) -> None:
            self._rewind = False
            if self._settle(batch, outcomes) and last:
                self._ack_end(())

        return SourceBatch(envelopes, ack)

    def _settle(self, batch: list[tuple[Item, Envelope | None]],
                outcomes: Sequence[BusError | None]) -> bool:
        """Move the ledger over what was confirmed or dead-lettered; False (and the rest is
        read again) at the first record the broker did not take."""
        parts, claimed, entry = self._parts, self.claimed, self._entry
        context = parts.context
        taken = iter(outcomes)
        confirmed = rejected = 0
        done: Item | None = None
        failure: BusError | None = None
        for item, envelope in batch:
            if envelope is None:
                if item.error is not None:
                    self._reject(item, item.error)
                    rejected += 1
                done = item
                continue
            outcome = next(taken)
            if outcome is None:
                confirmed += 1
            elif isinstance(outcome, PermanentError):
                self._reject(item, outcome)
                rejected += 1
            else:
                failure = outcome
                break
            done = item
        checkpoint, source = parts.checkpoint, context.instance
        if done is not None:
            checkpoint("confirmed", {"file": claimed.name, "line": done.line,
                                     "confirmed": entry.confirmed + confirmed})
            entry.confirmed += confirmed
            entry.rejected += rejected
            entry.next_line, entry.next_offset = done.line, done.end
            parts.ledger.put(entry)
            checkpoint("saved", {"file": claimed.name, "line": done.line,
                                 "confirmed": entry.confirmed})
        records = parts.metrics.records
        records.labels(source, "published").inc(confirmed)
        if rejected:
            records.labels(source, "rejected").inc(rejected)
        if failure is None:
            return True
        context.log.warning("pos_file.publish_failed", file=claimed.name,
                            line=entry.next_line + 1, error=str(failure))
        self._rewind = True
        return False

    def _reject(self, item: Item, error: BusError) -> None:
        claimed = self.claimed
        where = {"file": claimed.name, "line": item.line, "store": claimed.store}
        if isinstance(error, ParseError):
            error.with_context(file=claimed.name, line=item.line)
        else:
            error.with_context(**where)
        self._parts.context.reject(item.raw, error, where)

    def _ack_end(self, outcomes: Sequence[BusError | None]) -> None:
        """The last window was taken: published, then archived (or quarantined when the file
        changed after it was read)."""
        entry, claimed, ledger = self._entry, self.claimed, self._parts.ledger
        if entry.state == "publishing":
            entry.state = "published"
            archive = claimed.inbox.work.get("archive")
            entry.archive_as = str(archive.path / archive.free_name(claimed.name))
            ledger.put(entry)
        self._parts.checkpoint("published", {"file": claimed.name, "confirmed": entry.confirmed})
        self.done = True
        try:
            self._archive()
        finally:
            self.close()

    def _archive(self) -> None:
        entry, claimed, ledger = self._entry, self.claimed, self._parts.ledger
        disposer = self._parts.disposer
        if _changed(self._handle, self._before):
            error = ParseError("the file changed after it was read and published; the records "
                               "read were published, the change was not", file=claimed.name)
            disposer.quarantine(claimed, error, sha256=self._scan.sha256,
                                extra={"published": entry.confirmed})
            entry.state, entry.reason = "quarantined", str(error)
            ledger.put(entry)
            return
        archive = claimed.inbox.work.get("archive")
        planned = Path(entry.archive_as) if entry.archive_as else None
        if planned is None or planned.parent != archive.path or \
                archive.lstat(planned.name) is not None:  # taken while we were down
            planned = archive.path / archive.free_name(claimed.name)
            entry.archive_as = str(planned)
            ledger.put(entry)
        moved = claimed.folder.move(claimed.name, archive, planned.name)
        if moved != planned.name:  # taken in between (only by someone else's hand)
            entry.archive_as = str(archive.path / moved)
        self._parts.checkpoint("moved", {"file": claimed.name, "archive": entry.archive_as})
        entry.state = "archived"
        ledger.put(entry)
        disposer.archived(entry)

    def close(self) -> None:
        """Release the file and the parse helper. Idempotent."""
        if self._windows is not None:
            self._windows.close()
        self._handle.close()


def _changed(handle: BinaryIO, before: os.stat_result) -> bool:
    now = os.fstat(handle.fileno())
    return (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
