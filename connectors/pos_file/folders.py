"""Folders held open by descriptor: the inbox and the bus's own work folders.

Every file operation of the source is relative to a directory descriptor opened once with
``O_DIRECTORY | O_NOFOLLOW`` (``openat``-style, through ``dir_fd=``): listing, ``lstat``,
opening, renaming and creating. A name that a till swaps for a symbolic link afterwards changes
nothing about where the bus reads or writes, and no path is ever resolved again through a
folder that someone else can write. Everything the bus creates is created with
``O_CREAT | O_EXCL | O_NOFOLLOW`` (never over an existing name, never through a link).

:class:`WorkFolders` holds one inbox's ``processing/<node>``, ``archive``, ``error``,
``duplicate`` and ``refused`` under a work root outside the inbox, and checks before each use
that the name still leads to the directory it opened (same device and inode). When it does not
(the folder was swapped for a link, a FIFO or a directory the bus does not own), the impostor
is renamed aside — a rename moves the entry itself and never follows it — and a fresh folder is
created and opened in its place; the event is logged and journaled.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["Folder", "WorkFolders", "unsafe_reason"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FOLDER_MODE = 0o750
FILE_MODE = 0o640
ROLES = ("processing", "archive", "error", "duplicate", "refused")

Alarm = Callable[[str, dict[str, object]], None]


class Folder:
    """One directory, held by descriptor. ``path`` is only for messages and the ledger."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)

    @classmethod
    def open(cls, path: Path, *, parent: Folder | None = None) -> Folder:
        """Open ``path`` (a name inside ``parent`` when given) as a directory, never through a
        link: ELOOP or ENOTDIR (a link, a FIFO, a file) raise OSError."""
        if parent is None:
            return cls(os.open(path, _DIR_FLAGS), path)
        return cls(os.open(path.name, _DIR_FLAGS, dir_fd=parent.fd), path)

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry ``name`` as it is (a link is not followed); None if there is none."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def entries(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every entry, ``lstat``-ed (entries that vanish meanwhile are skipped)."""
        with os.scandir(self.fd) as listing:
            for entry in listing:
                try:
                    yield entry.name, entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue

    def open_file(self, name: str) -> int:
        """A read descriptor on ``name``: never a link, never blocking on a FIFO."""
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                       dir_fd=self.fd)

    def free_name(self, name: str) -> str:
        """``name``, or ``name.N`` for the first N not taken here."""
        candidate, n = name, 1
        while self.lstat(candidate) is not None:
            candidate, n = f"{name}.{n}", n + 1
        return candidate

    def move(self, name: str, to: Folder, new_name: str | None = None) -> str:
        """Rename the entry ``name`` (itself, never what a link points to) into ``to`` under
        ``new_name`` or the first free variant of ``name``; returns the name it got."""
        target = to.free_name(new_name or name)
        os.rename(name, target, src_dir_fd=self.fd, dst_dir_fd=to.fd)
        return target

    def create(self, name: str, data: bytes) -> None:
        """Write a new file ``name`` (O_EXCL: FileExistsError if anything has that name)."""
        fd = os.open(name, _NEW_FLAGS, FILE_MODE, dir_fd=self.fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def create_unique(self, name: str, data: bytes) -> str:
        """Write ``data`` to a new file named ``name`` or ``name.N``, atomically: a temp file of
        its own random name, then a hard link to the final name (which, unlike a rename, never
        replaces an existing entry). Returns the name written."""
        temp = f".{os.urandom(6).hex()}.tmp"
        self.create(temp, data)
        try:
            while True:
                target = self.free_name(name)
                try:
                    os.link(temp, target, src_dir_fd=self.fd, dst_dir_fd=self.fd,
                            follow_symlinks=False)
                    return target
                except FileExistsError:
                    continue  # taken between the look and the link: the next free name
        finally:
            self.unlink(temp)

    def unlink(self, name: str) -> bool:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def holds(self, parts: tuple[str, ...]) -> bool:
        """Is there an entry at ``parts`` below this folder? (Intermediate folders are opened
        with O_NOFOLLOW, the last part is ``lstat``-ed.)"""
        opened: list[Folder] = []
        try:
            current = self
            for part in parts[:-1]:
                current = Folder(os.open(part, _DIR_FLAGS, dir_fd=current.fd),
                                 current.path / part)
                opened.append(current)
            return current.lstat(parts[-1]) is not None
        except OSError:
            return False
        finally:
            for folder in opened:
                folder.close()

    def still_at(self, parent: Folder) -> bool:
        """Does ``path.name`` in ``parent`` still name this very directory?"""
        st = parent.lstat(self.path.name)
        return st is not None and stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == \
            self.identity

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _group_has_others(gid: int) -> bool:
    """Does any account besides the bus's own user belong to group ``gid``? (Unknown: yes.)"""
    uid = os.geteuid()
    try:
        group = grp.getgrgid(gid)
        me = pwd.getpwuid(uid).pw_name
    except KeyError:
        return True
    if set(group.gr_mem) - {me}:
        return True
    return any(p.pw_gid == gid and p.pw_uid != uid for p in pwd.getpwall())


def unsafe_reason(st: os.stat_result, inbox_gid: int, *, parent: bool = False) -> str | None:
    """Why a folder with this ``lstat`` must not hold the bus's work folders, or None: owned
    by another user, writable by every user, or writable by the inbox's group when other
    accounts are in it (access control lists are not read). ``parent``: the folder holding a
    work root (any owner; a sticky world-writable one like /tmp is fine)."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    sticky_ok = parent
    if not parent and st.st_uid not in (os.geteuid(), 0):
        return f"is owned by uid {st.st_uid}, not by the bus's user"
    if st.st_mode & stat.S_IWOTH and not (sticky_ok and st.st_mode & stat.S_ISVTX):
        return "is writable by every user"
    if st.st_mode & stat.S_IWGRP and st.st_gid == inbox_gid and _group_has_others(inbox_gid):
        return f"is writable by the inbox's group (gid {inbox_gid})"
    return None


class WorkFolders:
    """One inbox's work folders under ``root``: ``processing/<node>``, ``archive``, ``error``,
    ``duplicate``, ``refused`` (names from config). Lifecycle: ``open()`` → ``get(role)`` … →
    ``close()``. ``alarm(event, detail)`` is told about every folder found replaced."""

    def __init__(self, root: Path, names: dict[str, str], node: str, *, inbox_gid: int,
                 alarm: Alarm) -> None:
        self.root_path, self._names, self._node = root, names, node
        self._inbox_gid, self._alarm = inbox_gid, alarm
        self._root: Folder | None = None
        self._parents: dict[str, Folder] = {}  # role -> the folder its folder sits in
        self._folders: dict[str, Folder] = {}
        self._retired: list[Folder] = []  # replaced, kept open for files claimed through them

    def path(self, role: str) -> Path:
        if role == "processing":
            return self.root_path / self._names[role] / self._node
        return self.root_path / self._names[role]

    def open(self) -> None:
        """Create (mode 0750) and open the root and every work folder. Raises OSError when the
        root cannot be opened as a real folder."""
        if self._root is not None:
            return
        try:
            os.mkdir(self.root_path, FOLDER_MODE)
        except FileExistsError:
            pass
        self._root = Folder.open(self.root_path)
        for role in ROLES:
            self.get(role)

    def get(self, role: str) -> Folder:
        """The work folder ``role``, checked to still be the one opened (else replaced)."""
        root = self._root
        assert root is not None, "open() first"
        if role == "processing":
            parent = self._child(root, self._names[role], "processing_parent")
        else:
            parent = root
        return self._child(parent, self.path(role).name, role)

    def _child(self, parent: Folder, name: str, key: str) -> Folder:
        held = self._folders.get(key)
        if held is not None and self._parents.get(key) is parent and held.still_at(parent):
            return held
        folder = self._establish(parent, name)
        if held is not None:
            self._retired.append(held)
        self._folders[key], self._parents[key] = folder, parent
        return folder

    def _establish(self, parent: Folder, name: str) -> Folder:
        """Open ``name`` in ``parent`` as a safe folder of ours, or put what is there aside
        and make a new one."""
        path = parent.path / name
        try:
            folder = Folder.open(path, parent=parent)
        except FileNotFoundError:
            try:
                return self._make(parent, path)
            except FileExistsError:  # another node on this work root made it meanwhile
                return self._establish(parent, name)
        except OSError as exc:  # ELOOP: a link; ENOTDIR: a FIFO, a file; EACCES ...
            return self._replace(parent, path, f"cannot be opened as a folder ({exc.strerror})")
        problem = unsafe_reason(os.fstat(folder.fd), self._inbox_gid)
        if problem is None:
            return folder
        folder.close()
        return self._replace(parent, path, problem)

    def _make(self, parent: Folder, path: Path) -> Folder:
        os.mkdir(path.name, FOLDER_MODE, dir_fd=parent.fd)
        return Folder.open(path, parent=parent)

    def _replace(self, parent: Folder, path: Path, problem: str) -> Folder:
        aside = f".{path.name}.replaced-{time.time_ns()}"
        os.rename(path.name, aside, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
        self._alarm("pos_file.work_folder_replaced", {
            "folder": str(path), "found": problem, "moved_aside_as": str(parent.path / aside)})
        return self._make(parent, path)

    def holds(self, path: str) -> bool:
        """Is there an entry at ``path`` (a ledger's record of a claim or an archived file),
        looked up below the work root without following links? Outside the root: no."""
        if self._root is None:
            return False
        try:
            parts = Path(path).relative_to(self.root_path).parts
        except ValueError:
            return False
        return bool(parts) and ".." not in parts and self._root.holds(parts)

    def root_moved(self) -> bool:
        """Is the configured root path no longer the folder opened? (Its descriptors stay in
        use: nothing is resolved through the path again.)"""
        if self._root is None:
            return False
        try:
            st = os.lstat(self.root_path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._root.identity

    def close(self) -> None:
        for folder in (*self._folders.values(), *self._retired):
            folder.close()
        if self._root is not None:
            self._root.close()
        self._folders, self._parents, self._retired, self._root = {}, {}, [], None
