"""Inboxes: listing without following anything, refusing hostile entries, opening a claimed file
only when it is what was listed, and reason files.

The inbox and its work folders are held by descriptor (:mod:`connectors.pos_file.folders`):
nothing here resolves a path through a folder a till can write. Nothing opens a file it did not
first ``lstat`` as a plain regular file with one link, and :func:`open_claimed` re-checks the
opened descriptor (``O_NOFOLLOW | O_NONBLOCK``, then ``fstat`` and ``SEEK_HOLE``) so a swap
between listing and opening is caught, a FIFO never blocks, a link is never followed and a
sparse file is never hashed.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

from connectors.pos_file.errors import RefusalReason, RefusedEntry
from connectors.pos_file.folders import Folder, WorkFolders

__all__ = ["Inbox", "Listed", "classify", "list_inbox", "matches", "open_claimed", "shown",
           "write_reason"]

_ODD = re.compile(r"[\x00-\x1f\x7f-\x9f\udc80-\udcff]")  # controls, undecodable bytes


class Inbox:
    """One watched folder and its work folders (outside it, on the same file system).
    Lifecycle: ``open()`` (descriptors) → use → ``close()``."""

    def __init__(self, path: Path, store: str | None, work: WorkFolders) -> None:
        self.path, self.store, self.work = path, store, work
        self._folder: Folder | None = None

    @property
    def folder(self) -> Folder:
        assert self._folder is not None, "open() first"
        return self._folder

    def open(self) -> None:
        if self._folder is None:
            self._folder = Folder.open(self.path)
        self.work.open()

    def reopen_if_moved(self) -> bool:
        """The inbox's path names another real folder now (e.g. a share mounted after the
        start): hold that one instead. A link or anything else there is not followed (the old
        folder stays held). True if it changed."""
        folder = self.folder
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == folder.identity or not stat.S_ISDIR(st.st_mode):
                return False
            self._folder = Folder.open(self.path)
        except OSError:
            return False
        folder.close()
        return True

    def close(self) -> None:
        if self._folder is not None:
            self._folder.close()
            self._folder = None
        self.work.close()


@dataclass(frozen=True)
class Listed:
    """An inbox entry as seen by ``lstat`` (never following a link)."""

    inbox: Inbox
    name: str
    st: os.stat_result

    @property
    def path(self) -> Path:
        return self.inbox.path / self.name

    @property
    def identity(self) -> tuple[int, int, int, int]:
        return (self.st.st_ino, self.st.st_size, self.st.st_mtime_ns, self.st.st_nlink)


def list_inbox(inbox: Inbox) -> list[Listed]:
    """Every entry of the inbox except folders (never entered), lstat-ed."""
    out = [Listed(inbox, name, st) for name, st in inbox.folder.entries()
           if not stat.S_ISDIR(st.st_mode)]
    out.sort(key=lambda e: (e.st.st_mtime_ns, e.name))
    return out


def matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def classify(entry: Listed, name_pattern: re.Pattern[str]) -> RefusedEntry | None:
    """Why ``entry`` must never be read, or None. Size checks come later (at readiness)."""
    return classify_stat(entry.name, entry.st, name_pattern)


def classify_stat(name: str, st: os.stat_result,
                  name_pattern: re.Pattern[str]) -> RefusedEntry | None:
    mode, where = st.st_mode, {"file": shown(name)}
    if stat.S_ISLNK(mode):
        return RefusedEntry("a symbolic link: never followed", reason="symlink", **where)
    if stat.S_ISDIR(mode):
        return RefusedEntry("a folder: never entered", reason="not_regular", **where)
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        return RefusedEntry(f"{kind}: never opened", reason="not_regular", **where)
    if st.st_nlink != 1:
        return RefusedEntry(f"has {st.st_nlink} hard links: it may be a file from "
                            "elsewhere", reason="hardlink", **where)
    if ".." in name or _ODD.search(name) or not name_pattern.match(name):
        return RefusedEntry(f"file name {shown(name)} is not allowed", reason="bad_name",
                            **where)
    return None


def shown(name: str) -> str:
    """A file name safe for logs and JSON: escaped when it holds controls or undecodable bytes."""
    return ascii(name) if _ODD.search(name) else name


def open_claimed(folder: Folder, name: str, expected: os.stat_result, *,
                 max_size: int) -> BinaryIO:
    """Open a claimed file for reading, refusing (typed) anything that is not what was listed:
    ``permission_denied``, ``replaced``, ``not_regular``, ``hardlink``, ``truncated``,
    ``too_large``, ``sparse`` (holes: a real POS file has none, and hashing gigabytes of
    nothing is what a hostile one wants), ``unreadable``."""
    try:
        fd = folder.open_file(name)
    except OSError as exc:
        reason: RefusalReason = _OPEN_ERRORS.get(exc.errno or 0, "unreadable")
        raise RefusedEntry(f"cannot be opened: {exc.strerror}", reason=reason,
                           file=shown(name)) from exc
    try:
        refusal = _check_opened(fd, name, expected, max_size)
        if refusal is not None:
            raise refusal
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


_OPEN_ERRORS: dict[int, RefusalReason] = {
    errno.EACCES: "permission_denied", errno.EPERM: "permission_denied", errno.ELOOP: "symlink",
    errno.ENOENT: "replaced"}


def _check_opened(fd: int, name: str, expected: os.stat_result,
                  max_size: int) -> RefusedEntry | None:
    st = os.fstat(fd)
    where = {"file": shown(name)}
    if not stat.S_ISREG(st.st_mode):
        return RefusedEntry("not a regular file once opened", reason="not_regular", **where)
    if st.st_nlink != 1:
        return RefusedEntry(f"has {st.st_nlink} hard links once opened", reason="hardlink",
                            **where)
    if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
        return RefusedEntry("was replaced between listing and opening", reason="replaced",
                            **where)
    if st.st_size < expected.st_size:
        return RefusedEntry(f"is {st.st_size} bytes, shorter than the {expected.st_size} "
                            "listed: cut short", reason="truncated", **where)
    if st.st_size > max_size:
        return RefusedEntry(f"is {st.st_size} bytes, over the {max_size}-byte limit",
                            reason="too_large", **where)
    if st.st_size and _first_hole(fd) < st.st_size:
        allocated = st.st_blocks * 512
        return RefusedEntry(f"is sparse: {st.st_size} bytes long but only {allocated} "
                            "allocated (holes); never hashed", reason="sparse", **where)
    return None


def _first_hole(fd: int) -> int:
    """Where the first hole starts (the size if none; file systems without SEEK_HOLE report
    the whole file as data)."""
    try:
        return os.lseek(fd, 0, os.SEEK_HOLE)
    except OSError:
        return os.fstat(fd).st_size
    finally:
        os.lseek(fd, 0, os.SEEK_SET)


def write_reason(folder: Folder, beside: str, detail: Mapping[str, object]) -> str:
    """Write ``<beside>.reason.json`` (or ``.N``) in ``folder``, atomically and never over
    anything; returns the name written."""
    return folder.create_unique(f"{beside}.reason.json",
                                orjson.dumps(detail, option=orjson.OPT_INDENT_2))
