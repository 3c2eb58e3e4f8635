"""Change notification for inboxes: inotify through watchdog, or nothing (polling only).

The watcher only *hints*: it collects names that changed and wakes the source's loop. The loop
still lists, ``lstat``s and checks every entry itself, and a full rescan runs periodically in
every mode, because events get lost (queue overflow, network mounts, a watcher restart).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

__all__ = ["Watcher"]


class _Collect(FileSystemEventHandler):
    def __init__(self, watcher: Watcher, folder: Path) -> None:
        self._watcher, self._folder = watcher, folder

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write", "deleted"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = os.fsdecode(raw) if raw else ""
            if path and os.path.dirname(path) == str(self._folder):
                self._watcher.hint(self._folder, os.path.basename(path))


class _ShutdownRace(logging.Filter):
    """watchdog logs an ERROR when an event arrives while its emitter is stopping (a benign
    race, gorakhargosh/watchdog#963); drop exactly that record so it does not alarm operators."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


def _quiet_shutdown_race() -> None:
    logger = logging.getLogger("watchdog.observers.inotify")
    if not any(isinstance(f, _ShutdownRace) for f in logger.filters):
        logger.addFilter(_ShutdownRace())


class Watcher:
    """Collects (folder, name) hints from inotify; ``take()`` hands them out."""

    def __init__(self, folders: list[Path], *, enabled: bool, log: Any) -> None:
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._hints: set[tuple[Path, str]] = set()
        self._observer: Any = None
        self._folders, self._enabled, self._log = folders, enabled, log

    def start(self) -> None:
        if not self._enabled:
            return
        _quiet_shutdown_race()
        observer = Observer(timeout=0.1)  # how long stop() may wait for the emitter thread
        try:
            for folder in self._folders:
                observer.schedule(_Collect(self, folder), str(folder), recursive=False)
            observer.start()
        except OSError as exc:  # e.g. the inotify watch limit: rescans still find every file
            self._log.warning("pos_file.watch_unavailable", error=str(exc),
                              hint="falling back to polling (rescan_interval)")
            return
        self._observer = observer

    def hint(self, folder: Path, name: str) -> None:
        with self._lock:
            self._hints.add((folder, name))
        self.wake.set()

    def take(self) -> set[tuple[Path, str]]:
        with self._lock:
            hints, self._hints = self._hints, set()
        return hints

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(10)
