"""The ``pos_file`` source: watched inboxes → ready files → claimed → published → archived.

Lifecycle: the constructor validates (layout file, inbox folders) and raises ConfigError/
LayoutError; ``run(publisher, stop)`` first finishes what an earlier run left in
processing/<node>/, then loops until ``stop``: discover (inotify hints, a poll of files not yet
ready, a full rescan every ``rescan_interval``), refuse hostile entries, claim ready files by
atomic rename, ingest each to the end (see ``ingest``), check the expected-file calendar.
``close()`` is idempotent. One thread runs one source; files are taken one at a time, oldest
first.
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
from connectors.pos_file.ingest import Ingestor, Outcome
from connectors.pos_file.layout_file import load_layout
from connectors.pos_file.ledger import FileLedger
from connectors.pos_file.metrics import PosFileMetrics
from connectors.pos_file.placement import Placement, check_placements, default_work_root
from connectors.pos_file.publish import Checkpoint, WindowPublisher
from connectors.pos_file.readiness import Readiness
from connectors.pos_file.watch import Watcher
from integration_bus.connector import ConfigError, ConnectorContext, Publisher

__all__ = ["PosFileSource"]


def _no_checkpoint(point: str, info: Any) -> None:
    """Production default: checkpoints only matter to crash tests."""


class PosFileSource:
    """Reads POS files from inboxes. ``checkpoint`` (tests) is called at each named point of a
    file's life: claimed, scanned, confirmed, saved, published, moved."""

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
        windows = WindowPublisher(context=context, layout=self._layout, ledger=self.ledger,
                                  metrics=self.metrics, window=config.window,
                                  checkpoint=checkpoint)
        self._ingestor = Ingestor(config=config, layout=self._layout, ledger=self.ledger,
                                  disposer=self._disposer, windows=windows,
                                  checkpoint=checkpoint)
        self._readiness = Readiness(config.readiness, poll_interval=config.poll_interval / 1000,
                                    clock=context.clock)
        self._calendar = Calendar(config.calendar, context.cursors, self._alert)
        self._watcher = Watcher([b.path for b in self._inboxes], log=context.log,
                                enabled=config.watch == "inotify")
        self._waiting: dict[tuple[Path, str], Listed] = {}
        self._left_alone: set[tuple[int, int, str]] = set()  # refused but could not be moved

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
    def run(self, publisher: Publisher, stop: threading.Event) -> None:
        for inbox in self._inboxes:
            inbox.open()
        self._watcher.start()
        try:
            self._recover(publisher, stop)
            poll = self._config.poll_interval / 1000
            rescan = self._config.rescan_interval / 1000
            next_rescan = 0.0
            while not stop.is_set():
                if time.monotonic() >= next_rescan:
                    next_rescan = time.monotonic() + rescan
                    self._rescan()
                else:
                    self._look_again()
                ready = self._ready()
                for index, entry in enumerate(ready):
                    if stop.is_set() or time.monotonic() >= next_rescan:
                        for later in ready[index:]:  # discovery must not wait for a backlog
                            self._waiting[(later.inbox.path, later.name)] = later
                        break
                    self._take(entry, publisher, stop)
                self._calendar.tick(self._context.clock())
                self._watcher.wake.wait(max(0.0, min(poll, next_rescan - time.monotonic())))
                self._watcher.wake.clear()
        finally:
            self._watcher.stop()

    def close(self) -> None:
        self._watcher.stop()
        for inbox in self._inboxes:
            inbox.close()

    # -- discovery ------------------------------------------------------------------------------
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
    def _take(self, entry: Listed, publisher: Publisher, stop: threading.Event) -> Outcome | None:
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
            return self._ingestor.ingest(claimed, publisher, stop)

    def _store_of(self, inbox: Inbox, name: str) -> str:
        if inbox.store is not None:
            return inbox.store
        found = self._stores.search(name) if self._stores else None
        return found.group("store") if found else "-"

    # -- recovery -------------------------------------------------------------------------------
    def _recover(self, publisher: Publisher, stop: threading.Event) -> None:
        """Finish what an earlier run of this node left: entries moved but not recorded as
        archived, then every file still in processing/<node>/ (resumed from the ledger)."""
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
            for name, st in sorted(processing.entries()):
                if stop.is_set():
                    return
                self._resume(inbox, processing, name, st, publisher, stop)

    def _holder(self, path: str) -> Inbox | None:
        """The inbox whose work folders ``path`` lies in."""
        for inbox in self._inboxes:
            if Path(path).is_relative_to(inbox.work.root_path):
                return inbox
        return None

    def _resume(self, inbox: Inbox, processing: Folder, name: str, st: os.stat_result,
                publisher: Publisher, stop: threading.Event) -> None:
        refusal = classify(Listed(inbox, name, st), self._names)
        if refusal is not None:
            self._disposer.refuse(inbox, processing, name, refusal)
            return
        if self._readiness.policy == "marker":
            marker = inbox.folder.lstat(self._readiness.marker_name(name))
            if marker is not None and marker.st_mtime_ns <= st.st_ctime_ns:
                inbox.folder.unlink(self._readiness.marker_name(name))  # the claimed file's
        claimed = Claimed(inbox=inbox, name=name, folder=processing, st=st,
                          store=self._store_of(inbox, name))
        self._ingestor.ingest(claimed, publisher, stop)

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
