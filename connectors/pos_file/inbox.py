"""Inbox folders: listing without following anything, refusing hostile entries, claiming files
by atomic rename, and moving them on (archive, error, duplicate, refused) without overwriting.

Nothing here opens a file it did not first ``lstat`` as a plain regular file with one link, and
:func:`open_claimed` re-checks the opened descriptor (``O_NOFOLLOW | O_NONBLOCK``, then ``fstat``)
so a swap between listing and opening is caught, a FIFO never blocks, and a symlink or hardlink is
never followed out of the inbox.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

from connectors.pos_file.errors import RefusedEntry

__all__ = ["Inbox", "Listed", "classify", "list_inbox", "matches", "move_unique", "open_claimed",
           "shown", "unique_target", "write_reason"]

_ODD = re.compile(r"[\x00-\x1f\x7f-\x9f\udc80-\udcff]")  # controls, undecodable bytes


@dataclass(frozen=True)
class Inbox:
    """One watched folder and its work folders (all on the same file system)."""

    path: Path
    store: str | None
    processing: Path  # processing/<node>: only this node claims into it
    archive: Path
    error: Path
    duplicate: Path
    refused: Path

    def ensure(self) -> None:
        for folder in (self.processing, self.archive, self.error, self.duplicate, self.refused):
            folder.mkdir(parents=True, exist_ok=True)

    def work_names(self) -> set[str]:
        """Names of work folders that sit directly in the inbox (never candidates)."""
        out = set()
        for folder in (self.processing, self.archive, self.error, self.duplicate, self.refused):
            for parent in (folder, *folder.parents):
                if parent.parent == self.path:
                    out.add(parent.name)
        return out


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
    """Every entry of the inbox except folders, lstat-ed (entries that vanish are skipped)."""
    out = []
    skip = inbox.work_names()
    try:
        with os.scandir(inbox.path) as entries:
            for entry in entries:
                if entry.name in skip:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    continue
                out.append(Listed(inbox, entry.name, st))
    except FileNotFoundError:
        pass
    out.sort(key=lambda e: (e.st.st_mtime_ns, e.name))
    return out


def matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def classify(entry: Listed, name_pattern: re.Pattern[str]) -> RefusedEntry | None:
    """Why ``entry`` must never be read, or None. Size checks come later (at readiness)."""
    mode, where = entry.st.st_mode, {"file": shown(entry.name)}
    if stat.S_ISLNK(mode):
        return RefusedEntry("a symbolic link: never followed", reason="symlink", **where)
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        return RefusedEntry(f"{kind}: never opened", reason="not_regular", **where)
    if entry.st.st_nlink != 1:
        return RefusedEntry(f"has {entry.st.st_nlink} hard links: it may be a file from "
                            "elsewhere", reason="hardlink", **where)
    if ".." in entry.name or _ODD.search(entry.name) or not name_pattern.match(entry.name):
        return RefusedEntry(f"file name {shown(entry.name)} is not allowed", reason="bad_name",
                            **where)
    return None


def shown(name: str) -> str:
    """A file name safe for logs and JSON: escaped when it holds controls or undecodable bytes."""
    return ascii(name) if _ODD.search(name) else name


def open_claimed(path: Path, expected: os.stat_result, *, max_size: int) -> BinaryIO:
    """Open a claimed file for reading, refusing anything that is not what was listed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise RefusedEntry(f"cannot open it safely: {exc.strerror}", reason="changed",
                           file=path.name) from exc
    try:
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "not a regular file once opened"
        elif st.st_nlink != 1:
            problem = f"has {st.st_nlink} hard links once opened"
        elif (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
            problem = "was replaced between listing and opening"
        elif st.st_size > max_size:
            problem = f"is {st.st_size} bytes, over the {max_size}-byte limit"
        if problem is not None:
            raise RefusedEntry(problem, reason="too_large" if "limit" in problem else "changed",
                               file=path.name)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def unique_target(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/name.N`` for the first N not taken."""
    target, n = folder / name, 1
    while os.path.lexists(target):
        target, n = folder / f"{name}.{n}", n + 1
    return target


def move_unique(path: Path, folder: Path, name: str | None = None) -> Path:
    """Rename ``path`` into ``folder`` without overwriting anything; returns the new path.
    (One mover per folder and node: the check-then-rename is not racing anyone.)"""
    target = unique_target(folder, name or path.name)
    os.rename(path, target)
    return target


def write_reason(beside: Path, detail: Mapping[str, object]) -> Path:
    """Write ``<beside>.reason.json`` atomically (temp + rename) and return its path."""
    target = beside.with_name(beside.name + ".reason.json")
    temp = beside.with_name(f".{beside.name}.reason.tmp")
    temp.write_bytes(orjson.dumps(detail, option=orjson.OPT_INDENT_2))
    os.rename(temp, target)
    return target
