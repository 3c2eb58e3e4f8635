"""The ``pos_file`` source: watched inboxes → ready files → claimed → published → archived.

A ``BatchSource``: ``read(stop)`` hands the runtime the next window of the file it is on, and the
runtime publishes it with confirms and only then calls the window's ack, which moves the file
ledger, dead-letters what the broker will never take, and after the last window archives the
file (see ``ingest``). Between files ``read`` does the finding: at the first read it finishes
what an earlier run left in processing/<node>/ (resumed from the ledger), then works in rounds —
discover (inotify hints, a poll of files not yet ready, a full rescan every
``rescan_interval``), refuse hostile entries, claim ready files by atomic rename, oldest first,
and take each to its end; after a round it checks the expected-file calendar and waits up to
``poll_interval`` (an empty batch).

Lifecycle: the constructor validates (layout file, inbox folders) and raises ConfigError/
LayoutError; the first ``read`` opens the inboxes and starts the watcher; ``close()`` (idempotent)
stops them and leaves a file in flight in processing/ for the next start. One thread reads one
source; files are taken one at a time.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

from connectors.pos_file.calendar import AlertKind, Calendar
from connectors.pos_file.config import ExpectedFile, PosFileSourceConfig
from connectors.pos_file.dispose import Claimed, Disposer
from connectors.pos_file.errors import RefusedEntry
from connectors.pos_file.folders import Folder, WorkFolders
from connectors.pos_file.inbox import Inbox, Listed, classify, list_inbox, matches, shown
from connectors.pos_file.ingest import FileRun, Ingestor, Parts
from connectors.pos_file.layout_file import load_layout
from connectors.pos_file.ledger import FileLedger
from connectors.pos_file.metrics import PosFileMetrics
from connectors.pos_file.placement import Placement, check_placements, default_work_root
from connectors.pos_file.readiness import Readiness
from connectors.pos_file.watch import Watcher
from connectors.pos_file.windows import Checkpoint
from integration_bus.connector import (
    ConfigError,
    ConnectorContext,
    Publisher,
    SourceBatch,
    run_batch_source,
)

__all__ = ["PosFileSource"]


def _no_checkpoint(point: str, info: Any) -> None:
    """Production default: checkpoints only matter to crash tests."""


def _nothing_to_ack(outcomes: object) -> None:
    """The ack of an empty batch (a round that found nothing to publish)."""


_IDLE = SourceBatch((), _nothing_to_ack)


class PosFileSource:
    """Reads POS files from inboxes (a ``BatchSource``). ``checkpoint`` (tests) is called at
    each named point of a file's life: claimed, scanned, confirmed, saved, published, moved."""

    def __init__(self, config: PosFileSourceConfig, context: ConnectorContext, *,
                 checkpoint: Checkpoint = _no_checkpoint) -> None:
        self.name = context.instance
        self._config, self._context = config, context
        self._layout = load_layout(context.resolve(config.layout), field="layout")
        self._inboxes = self._place_inboxes()
        self._names = re.compile(config.name_pattern)
        self._stores = re.compile(config.store_pattern) if config.store_pattern else None
        self.metrics = PosFileMetrics.of(context.metrics.registry)
        self.ledger = FileLedger(context.cursors, config.node)
        self._disposer = Disposer(context, self.metrics)
        self._ingestor = Ingestor(config=config, layout=self._layout, parts=Parts(
            context=context, ledger=self.ledger, disposer=self._disposer, metrics=self.metrics,
            checkpoint=checkpoint))
        self._readiness = Readiness(config.readiness, poll_interval=config.poll_interval / 1000,
                                    clock=context.clock)
        self._calendar = Calendar(config.calendar, context.cursors, self._alert)
        self._watcher = Watcher([b.path for b in self._inboxes], log=context.log,
                                enabled=config.watch == "inotify")
        self._waiting: dict[tuple[Path, str], Listed] = {}
        self._left_alone: set[tuple[int, int, str]] = set()  # refused but could not be moved
        self._started = False
        self._resuming: list[tuple[Inbox, Folder, str, os.stat_result]] = []
        self._round: list[Listed] | None = None  # ready files of this round, oldest first
        self._next_rescan = 0.0
        self._file: FileRun | None = None  # the file being published

    def _place_inboxes(self) -> list[Inbox]:
        """Each inbox with its work root, checked (ConfigError) but not yet opened."""
        config, placements = self._config, []
        for index, box in enumerate(config.inboxes):
            folder = self._context.resolve(box.path)
            if not folder.is_dir():
                raise ConfigError(f"inbox {folder} is not a folder",
                                  field=f"inboxes[{index}].path",
                                  hint="create it, or mount the share before starting the bus")
            real = folder.resolve()  # the configured path is trusted; held by descriptor later
            work = self._context.resolve(box.work) if box.work else default_work_root(real)
            placements.append(Placement(index, real, work, configured=box.work is not None))
        check_placements(placements)
        names = {"processing": config.processing_dir, "archive": config.archive_dir,
                 "error": config.error_dir, "duplicate": config.duplicate_dir,
                 "refused": config.refused_dir}
        return [Inbox(p.inbox, box.store,
                      WorkFolders(p.work, names, config.node,
                                  inbox_gid=os.stat(p.inbox).st_gid, alarm=self._folder_alarm))
                for p, box in zip(placements, config.inboxes, strict=True)]

    def _folder_alarm(self, event: str, detail: dict[str, object]) -> None:
        self._context.record(event, dict(detail))
        self._context.log.error(event, **detail)

    # -- the loop -------------------------------------------------------------------------------
    def read(self, stop: threading.Event) -> SourceBatch:
        """The next window of the file in flight, finding and claiming the next file when it
        is done; an empty batch after a round with nothing (more) to publish."""
        if not self._started:
            self._start()
        while True:
            if self._file is not None:
                batch = self._file.next_batch()
                if batch is not None:
                    return batch
                self._file = None  # archived or quarantined by its last ack
            if stop.is_set():
                return _IDLE
            if self._resuming:
                self._file = self._resume(*self._resuming.pop(0))
                continue
            if self._round is None:
                self._round = self._discover()
            if self._round and time.monotonic() < self._next_rescan:
                self._file = self._take(self._round.pop(0))
                continue
            for later in self._round:  # discovery must not wait for a backlog
                self._waiting[(later.inbox.path, later.name)] = later
            self._round = None
            self._calendar.tick(self._context.clock())
            poll = self._config.poll_interval / 1000
            self._watcher.wake.wait(max(0.0, min(poll, self._next_rescan - time.monotonic())))
            self._watcher.wake.clear()
            return _IDLE

    def run(self, publisher: Publisher, stop: threading.Event) -> None:
        """The ``Source`` contract for callers that run a source themselves: the runtime's
        read, publish, then ack loop (a file in flight at the end stays in processing/)."""
        try:
            run_batch_source(self, publisher, stop)
        finally:
            self._pause()

    def close(self) -> None:
        self._pause()
        for inbox in self._inboxes:
            inbox.close()

    def _start(self) -> None:
        for inbox in self._inboxes:
            inbox.open()
        self._watcher.start()
        self._started = True
        self._recover()

    def _pause(self) -> None:
        """Stop watching and let go of the file in flight; the next read starts again with
        recovery (that file is resumed from the ledger)."""
        self._started = False
        self._watcher.stop()
        file, self._file = self._file, None
        if file is not None:
            file.close()
        self._resuming, self._round = [], None

    # -- discovery ------------------------------------------------------------------------------
    def _discover(self) -> list[Listed]:
        """A round's ready files: after a full rescan when one is due, else a look at the
        watcher's hints and the files not yet ready."""
        if time.monotonic() >= self._next_rescan:
            self._next_rescan = time.monotonic() + self._config.rescan_interval / 1000
            self._rescan()
        else:
            self._look_again()
        return self._ready()

    def _rescan(self) -> None:
        self._watcher.take()  # a full listing covers every hint
        seen: dict[tuple[Path, str], Listed] = {}
        for inbox in self._inboxes:
            self._check_folders(inbox)
            for entry in list_inbox(inbox):
                seen[(inbox.path, entry.name)] = entry
        for key in set(self._waiting) - set(seen):
            self._readiness.forget(self._waiting.pop(key))
        for key, entry in seen.items():
            self._note(key, entry)

    def _look_again(self) -> None:
        keys = set(self._waiting)
        for folder, name in self._watcher.take():
            data = self._readiness.data_name(name) if self._readiness.policy == "marker" else None
            keys.add((folder, data or name))
        by_path = {b.path: b for b in self._inboxes}
        for folder, name in keys:
            inbox = by_path.get(folder)
            st = inbox.folder.lstat(name) if inbox is not None and "/" not in name else None
            if st is None:
                entry = self._waiting.pop((folder, name), None)
                if entry is not None:
                    self._readiness.forget(entry)
                continue
            if inbox is not None and not stat.S_ISDIR(st.st_mode):
                self._note((folder, name), Listed(inbox, name, st))

    def _note(self, key: tuple[Path, str], entry: Listed) -> None:
        if self._readiness.ignored(entry.name) or not matches(entry.name, [self._config.pattern]):
            return
        if (entry.st.st_dev, entry.st.st_ino, entry.name) in self._left_alone:
            return
        if key not in self._waiting:
            self.metrics.discovered.labels(self.name).inc()
        self._waiting[key] = entry

    def _ready(self) -> list[Listed]:
        ready = []
        for key, entry in list(self._waiting.items()):
            refusal = classify(entry, self._names)
            if refusal is None and entry.st.st_size > self._config.max_file_size:
                refusal = RefusedEntry(f"{entry.st.st_size} bytes is over the "
                                       f"{self._config.max_file_size}-byte limit",
                                       reason="too_large", file=entry.name)
            if refusal is not None:
                del self._waiting[key]
                if self._disposer.refuse(entry.inbox, entry.inbox.folder, entry.name,
                                         refusal) is None:
                    self._left_alone.add((entry.st.st_dev, entry.st.st_ino, entry.name))
                continue
            if self._readiness.ready(entry):
                del self._waiting[key]
                ready.append(entry)
        return sorted(ready, key=lambda e: (e.st.st_mtime_ns, e.name))

    # -- claiming -------------------------------------------------------------------------------
    def _take(self, entry: Listed) -> FileRun | None:
        inbox = entry.inbox
        try:
            processing = inbox.work.get("processing")
            if processing.lstat(entry.name) is not None:
                return None  # the same name is still in processing: after that one finishes
            # the claim: one node wins, the others see ENOENT
            os.rename(entry.name, entry.name, src_dir_fd=inbox.folder.fd,
                      dst_dir_fd=processing.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:  # e.g. no permission on the share: try again at the next look
            self._context.log.error("pos_file.claim_failed", file=shown(entry.name),
                                    error=str(exc))
            return None
        st = processing.lstat(entry.name)
        if st is None:
            return None  # taken out of processing/ meanwhile (not by this bus)
        replaced = (st.st_ino, st.st_size, st.st_mtime_ns) != (
            entry.st.st_ino, entry.st.st_size, entry.st.st_mtime_ns)
        if replaced and inbox.folder.lstat(entry.name) is None:
            # changed since its readiness was judged: back to the inbox, look again
            processing.move(entry.name, inbox.folder, entry.name)
            return None
        if self._readiness.policy == "marker":
            inbox.folder.unlink(self._readiness.marker_name(entry.name))
        self._calendar.arrived(entry.name, st.st_mtime)
        claimed = Claimed(inbox=inbox, name=entry.name, folder=processing, st=st,
                          store=self._store_of(inbox, entry.name))
        with self._context.span("source.read", {"bus.source": self._context.instance,
                                                "bus.file": shown(entry.name),
                                                "bus.store": claimed.store}):
            return self._ingestor.begin(claimed)

    def _store_of(self, inbox: Inbox, name: str) -> str:
        if inbox.store is not None:
            return inbox.store
        found = self._stores.search(name) if self._stores else None
        return found.group("store") if found else "-"

    # -- recovery -------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Finish what an earlier run of this node left: entries moved but not recorded as
        archived now, then (the first reads) every file still in processing/<node>/, resumed
        from the ledger."""
        for key in self.ledger.open_keys():
            entry = self.ledger.get_key(key)
            if entry is None or entry.terminal:
                self.ledger.unlist(key)
                continue
            inbox = self._holder(entry.claimed_as)
            if inbox is None:  # claimed under the old layout (work folders inside the inbox)
                self._context.log.warning(
                    "pos_file.claim_outside_work_folders", file=entry.name,
                    path=entry.claimed_as, state=entry.state,
                    hint="move it into this inbox's processing/<node>/ folder: "
                         "docs/pos-file.md, 'Upgrading'")
            elif not inbox.work.holds(entry.claimed_as):
                if entry.state == "published" and entry.archive_as and \
                        inbox.work.holds(entry.archive_as):
                    entry.state = "archived"  # moved to archive/, then the crash came
                    self.ledger.put(entry)
                    self._disposer.archived(entry, recovered=True)
                else:
                    self._context.log.warning("pos_file.claim_missing", file=entry.name,
                                              path=entry.claimed_as, state=entry.state)
        for inbox in self._inboxes:
            processing = inbox.work.get("processing")
            self._resuming += [(inbox, processing, name, st)
                               for name, st in sorted(processing.entries())]

    def _holder(self, path: str) -> Inbox | None:
        """The inbox whose work folders ``path`` lies in."""
        for inbox in self._inboxes:
            if Path(path).is_relative_to(inbox.work.root_path):
                return inbox
        return None

    def _resume(self, inbox: Inbox, processing: Folder, name: str,
                st: os.stat_result) -> FileRun | None:
        refusal = classify(Listed(inbox, name, st), self._names)
        if refusal is not None:
            self._disposer.refuse(inbox, processing, name, refusal)
            return None
        if self._readiness.policy == "marker":
            marker = inbox.folder.lstat(self._readiness.marker_name(name))
            if marker is not None and marker.st_mtime_ns <= st.st_ctime_ns:
                inbox.folder.unlink(self._readiness.marker_name(name))  # the claimed file's
        claimed = Claimed(inbox=inbox, name=name, folder=processing, st=st,
                          store=self._store_of(inbox, name))
        return self._ingestor.begin(claimed)

    def _check_folders(self, inbox: Inbox) -> None:
        """At each rescan: follow a re-mounted inbox; say so if the work root was moved."""
        if inbox.reopen_if_moved():
            self._context.log.warning("pos_file.inbox_reopened", inbox=str(inbox.path))
        if inbox.work.root_moved():
            self._folder_alarm("pos_file.work_root_moved", {
                "folder": str(inbox.work.root_path),
                "note": "the folders opened at start stay in use; restart to take the new one"})

    # -- calendar -------------------------------------------------------------------------------
    def _alert(self, kind: AlertKind, expected: ExpectedFile, day: date,
               detail: dict[str, str]) -> None:
        self.metrics.alerts.labels(self.name, expected.store, kind).inc()
        self.metrics.set_missing(self.name, expected.store, expected.pattern,
                                 kind == "missing")
        info = {"store": expected.store, "pattern": expected.pattern, "day": day.isoformat(),
                **detail}
        self._context.record(f"pos_file.file_{kind}", info)
        self._context.log.warning(f"pos_file.file_{kind}", **info)
