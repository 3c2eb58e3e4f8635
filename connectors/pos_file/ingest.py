"""One claimed file, from processing/ to its final folder: the crash-safe state machine.

    claimed ─ open safely ─ scan (hash, validate, control totals) ─┬─ bad ──────> error/
                                                                   ├─ seen ─────> duplicate/
                                                                   └─ publish windows (ledger)
                                                                        └─ published ─> archive/

The same code resumes a file after a crash: the scan finds the ledger entry by (store, sha256),
and publishing continues from the entry's line and offset. Named checkpoints (``claimed``,
``scanned``, ``confirmed``, ``saved``, ``published``, ``moved``) mark the points between durable
steps; tests kill the source at each of them. What a crash at each leaves behind, and why a
restart neither loses nor doubles anything, is in docs/pos-file.md.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO, Literal

from connectors.pos_file.config import PosFileSourceConfig
from connectors.pos_file.dispose import Claimed, Disposer
from connectors.pos_file.errors import ParseError, RefusedEntry
from connectors.pos_file.inbox import open_claimed
from connectors.pos_file.ledger import FileEntry, FileLedger
from connectors.pos_file.parser import Layout
from connectors.pos_file.publish import Checkpoint, WindowPublisher
from connectors.pos_file.scan import Scan, scan_file
from integration_bus.connector import Backoff, Publisher

__all__ = ["Ingestor", "Outcome"]

Outcome = Literal["archived", "quarantined", "duplicate", "refused", "returned", "stopped"]


class Ingestor:
    """Takes claimed files to the end. Owned by one source thread."""

    def __init__(self, *, config: PosFileSourceConfig, layout: Layout, ledger: FileLedger,
                 disposer: Disposer, windows: WindowPublisher, checkpoint: Checkpoint) -> None:
        self._config, self._layout, self._ledger = config, layout, ledger
        self._disposer, self._windows, self._checkpoint = disposer, windows, checkpoint

    def ingest(self, claimed: Claimed, publisher: Publisher, stop: threading.Event) -> Outcome:
        """Process ``claimed`` until it is archived, quarantined, a duplicate, refused or given
        back, or until ``stop`` (then it stays in processing/ and resumes at the next start).
        Transient publish failures are retried here with backoff."""
        self._checkpoint("claimed", {"file": claimed.name})
        try:
            handle = open_claimed(claimed.folder, claimed.name, claimed.st,
                                  max_size=self._config.max_file_size)
        except RefusedEntry as exc:
            self._disposer.refuse(claimed.inbox, claimed.folder, claimed.name, exc)
            return "refused"
        with handle:
            before = os.fstat(handle.fileno())
            if before.st_size == 0:
                self._disposer.refuse(claimed.inbox, claimed.folder, claimed.name, RefusedEntry(
                    "the file is empty (0 bytes)", reason="empty", file=claimed.name))
                return "refused"
            scan = scan_file(handle, self._layout, file=claimed.name,
                             max_bad=self._config.max_bad_records,
                             all_or_nothing=self._config.on_bad_record == "quarantine_file")
            if _changed(handle, before) or scan.size != before.st_size:
                self._disposer.give_back(claimed, "it changed while it was being read")
                return "returned"
            self._checkpoint("scanned", {"file": claimed.name, "sha256": scan.sha256})
            if scan.error is not None:
                return self._quarantine(claimed, scan, scan.error)
            entry = self._entry(claimed, scan)
            if entry is None:
                return "duplicate"
            if entry.state == "publishing":
                progress = self._publish(claimed, handle, scan, entry, publisher, stop)
                if progress == "stopped":
                    return "stopped"
            return self._archive(claimed, handle, before, scan, entry)

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

    def _publish(self, claimed: Claimed, handle: BinaryIO, scan: Scan, entry: FileEntry,
                 publisher: Publisher, stop: threading.Event) -> str:
        retry = Backoff(first=0.5, cap=30.0).start()
        while True:
            progress = self._windows.run(claimed, handle, scan, entry, publisher, stop)
            if progress != "failed":
                break
            if retry.wait(stop):
                return "stopped"
        if progress == "stopped":
            return progress
        entry.state = "published"
        archive = claimed.inbox.work.get("archive")
        entry.archive_as = str(archive.path / archive.free_name(claimed.name))
        self._ledger.put(entry)
        return "done"

    def _archive(self, claimed: Claimed, handle: BinaryIO, before: os.stat_result, scan: Scan,
                 entry: FileEntry) -> Outcome:
        self._checkpoint("published", {"file": claimed.name, "confirmed": entry.confirmed})
        if _changed(handle, before):
            error = ParseError("the file changed after it was read and published; the records "
                               "read were published, the change was not", file=claimed.name)
            self._disposer.quarantine(claimed, error, sha256=scan.sha256,
                                      extra={"published": entry.confirmed})
            entry.state, entry.reason = "quarantined", str(error)
            self._ledger.put(entry)
            return "quarantined"
        archive = claimed.inbox.work.get("archive")
        planned = Path(entry.archive_as) if entry.archive_as else None
        if planned is None or planned.parent != archive.path or \
                archive.lstat(planned.name) is not None:  # taken while we were down
            planned = archive.path / archive.free_name(claimed.name)
            entry.archive_as = str(planned)
            self._ledger.put(entry)
        moved = claimed.folder.move(claimed.name, archive, planned.name)
        if moved != planned.name:  # taken in between (only by someone else's hand)
            entry.archive_as = str(archive.path / moved)
        target = entry.archive_as
        self._checkpoint("moved", {"file": claimed.name, "archive": target})
        entry.state = "archived"
        self._ledger.put(entry)
        self._disposer.archived(entry)
        return "archived"

    def _quarantine(self, claimed: Claimed, scan: Scan, error: ParseError) -> Outcome:
        self._disposer.quarantine(claimed, error, sha256=scan.sha256,
                                  extra={"bad_records": scan.bad, "first_errors": scan.errors})
        entry = self._ledger.get(claimed.store, scan.sha256) or FileEntry(
            store=claimed.store, sha256=scan.sha256, name=claimed.name, size=scan.size,
            node=self._config.node, claimed_as=str(claimed.path), records=scan.details)
        if entry.state != "archived":  # a bad copy of a good file must not hide the good one
            entry.state, entry.reason = "quarantined", str(error)
            self._ledger.put(entry)
        return "quarantined"


def _changed(handle: BinaryIO, before: os.stat_result) -> bool:
    now = os.fstat(handle.fileno())
    return (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns)

