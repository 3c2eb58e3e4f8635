"""A till (or anyone who can write where it should not) attacks the work folders: swaps one of
processing/, archive/, error/, duplicate/, refused/ for a symbolic link to a canary folder, a FIFO
or a folder open to everyone, plants such entries there before the first start, or plants them in
the inbox under the work folders' names. In every case the canary is never read, moved or
written (inotify on its inodes sees any access by any path), the source keeps ingesting (a good
file archived, a bad one quarantined, a duplicate moved aside, a hostile entry refused), and a
swapped folder is journaled and replaced. Also: typed refusals of sparse, unreadable and
truncated files, reason files that never overwrite anything, and where work folders may not be.

These run on the embedded transport: what is checked is the file system, not the broker."""

from __future__ import annotations

import grp
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from connectors.pos_file.config import InboxConfig, PosFileSourceConfig
from connectors.pos_file.errors import RefusedEntry
from connectors.pos_file.folders import Folder, WorkFolders, _group_has_others
from connectors.pos_file.inbox import open_claimed
from connectors.pos_file.lane import daily_file_bytes
from connectors.pos_file.ledger import FileEntry, FileLedger
from connectors.pos_file.source import PosFileSource
from integration_bus.connector import ConfigError
from tests.pos_file.support import (
    DAILY,
    IN_ACCESS,
    InodeWatch,
    PosBus,
    daily_layout,
    drop,
    files_in,
    open_pos_bus,
    without_file_permission_override,
)
from tests.support.probe import wait_for

ROLES = ("processing", "archive", "error", "duplicate", "refused")
GOOD_A, GOOD_B = "SALES_0042_20240301.DAT", "SALES_0042_20240302.DAT"
BAD, DUPLICATE, HOSTILE = "SALES_0042_BAD.DAT", "SALES_0042_AGAIN.DAT", "SALES_0042_LINK.DAT"


def _valid(seed: int) -> bytes:
    return daily_file_bytes(daily_layout(), store="0042", records=3, seed=seed)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[PosBus]:
    bus = open_pos_bus(tmp_path, "")
    try:
        yield bus
    finally:
        bus.close()


class Canary:
    """A folder outside everything with a file in it; every event on either is recorded."""

    def __init__(self, root: Path) -> None:
        self.folder = root / "canary"
        self.folder.mkdir()
        self.file = self.folder / "id_rsa"
        self.file.write_bytes(b"PRIVATE")
        self.watch = InodeWatch([self.folder, self.file])

    def untouched(self) -> None:
        assert self.watch.events() == [], "the canary was read, moved or written"
        assert os.listdir(self.folder) == ["id_rsa"] and self.file.read_bytes() == b"PRIVATE"


def _impostor(kind: str, path: Path, canary: Canary) -> None:
    if kind == "symlink":
        path.symlink_to(canary.folder, target_is_directory=True)
    elif kind == "fifo":
        os.mkfifo(path)
    else:  # a folder everyone may write
        path.mkdir()
        path.chmod(0o777)


def _role_path(bus: PosBus, role: str) -> Path:
    return bus.work() / role  # for processing: the folder holding processing/<node>


def _drop_the_rest(inbox: Path, canary: Canary) -> None:
    """A good file, a bad one, a copy of the first good one, and a link to the canary."""
    drop(inbox, GOOD_B, _valid(2))
    drop(inbox, BAD, b"this is not a daily sales file\r\n")
    drop(inbox, DUPLICATE, _valid(1))
    (inbox / HOSTILE).symlink_to(canary.file)


def _names_in(folder: Path) -> list[str]:
    """The entries of ``folder`` if it is a real folder (the test must not follow an impostor
    link to the canary either)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return []
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def _all_handled(bus: PosBus, *, inbox_left: list[str] | None = None) -> bool:
    work = bus.work()
    return (GOOD_B in _names_in(work / "archive") and BAD in _names_in(work / "error")
            and DUPLICATE in _names_in(work / "duplicate")
            and HOSTILE in _names_in(work / "refused")
            and os.listdir(bus.inbox()) == (inbox_left or []))


def _ingests_the_rest(bus: PosBus, canary: Canary) -> None:
    _drop_the_rest(bus.inbox(), canary)
    wait_for(lambda: _all_handled(bus), timeout=20, message="the source goes on ingesting")
    assert os.path.islink(bus.work() / "refused" / HOSTILE)  # the link itself, not its target
    for role in ROLES:  # the work folders are real folders again
        st = os.lstat(_role_path(bus, role))
        assert stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IWOTH, role


@pytest.mark.parametrize("kind", ["symlink", "fifo", "open_folder"])
@pytest.mark.parametrize("role", ROLES)
def test_a_work_folder_swapped_while_running_is_never_followed(
        embedded: PosBus, tmp_path: Path, role: str, kind: str) -> None:
    # Given a running source that already archived a file (its folders are open)
    canary = Canary(tmp_path)
    with embedded.running_source(embedded.source()):
        drop(embedded.inbox(), GOOD_A, _valid(1))
        wait_for(lambda: files_in(embedded.work() / "archive") == [GOOD_A], message="archived")
        # When someone moves the work folder away and puts an impostor in its place
        os.rename(_role_path(embedded, role), tmp_path / f"stolen-{role}")
        _impostor(kind, _role_path(embedded, role), canary)
        # Then the source goes on with a new folder of its own, and the canary is untouched
        _ingests_the_rest(embedded, canary)
    canary.untouched()
    (alarm,) = embedded.events("pos_file.work_folder_replaced")
    assert alarm["folder"] == str(_role_path(embedded, role))
    aside = Path(str(alarm["moved_aside_as"]))
    if kind == "symlink":  # put aside as it was: still the link, never followed
        assert os.readlink(aside) == str(canary.folder)


@pytest.mark.parametrize("role", ROLES)
def test_an_impostor_planted_before_the_first_start_is_never_followed(
        embedded: PosBus, tmp_path: Path, role: str) -> None:
    canary = Canary(tmp_path)
    embedded.work().mkdir()
    _impostor("symlink", _role_path(embedded, role), canary)
    archive = embedded.work() / "archive"
    with embedded.running_source(embedded.source()):
        drop(embedded.inbox(), GOOD_A, _valid(1))
        # (never list through the impostor ourselves: until the bus replaced it, archive/ may
        # still be the link to the canary)
        wait_for(lambda: not archive.is_symlink() and files_in(archive) == [GOOD_A],
                 message="archived")
        _ingests_the_rest(embedded, canary)
    canary.untouched()
    assert len(embedded.events("pos_file.work_folder_replaced")) == 1


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
@pytest.mark.parametrize("role", ROLES)
def test_entries_named_like_work_folders_in_the_inbox_are_never_entered(
        embedded: PosBus, tmp_path: Path, role: str, kind: str) -> None:
    # Given a till that plants an entry under a work folder's name in the inbox (where the old
    # layout kept them), pointing at the canary or holding a file of its own
    canary = Canary(tmp_path)
    planted = embedded.inbox() / role
    if kind == "folder":
        planted.mkdir()
        drop(planted, GOOD_A, _valid(7))
        watch = InodeWatch([planted, planted / GOOD_A])
    else:
        _impostor(kind, planted, canary)
        watch = InodeWatch([canary.folder])
    with embedded.running_source(embedded.source()):
        drop(embedded.inbox(), GOOD_A, _valid(1))
        wait_for(lambda: files_in(embedded.work() / "archive") == [GOOD_A], message="archived")
        _drop_the_rest(embedded.inbox(), canary)
        wait_for(lambda: _all_handled(embedded, inbox_left=[role]), timeout=20,
                 message="the source goes on ingesting")
    # Then the planted entry is where it was, never opened, and the canary untouched
    assert watch.events() == [] and os.path.lexists(planted)
    canary.untouched()
    assert embedded.events("pos_file.work_folder_replaced") == []


def test_entries_named_like_reason_files_do_not_stop_the_source(embedded: PosBus) -> None:
    # Given error/ and refused/ holding folders and links under the names the reason files of
    # the next bad file and the next refused entry would get (and the old temp file name)
    embedded.work().mkdir()
    for folder, name in (("error", BAD), ("refused", HOSTILE)):
        (embedded.work() / folder).mkdir(mode=0o750)
        (embedded.work() / folder / f"{name}.reason.json").mkdir()
        (embedded.work() / folder / f".{name}.reason.tmp").mkdir()
    with embedded.running_source(embedded.source()):
        drop(embedded.inbox(), BAD, b"garbage\r\n")
        (embedded.inbox() / HOSTILE).symlink_to("/etc/passwd")
        drop(embedded.inbox(), GOOD_A, _valid(1))
        # Then both are set aside with their reasons beside them, under the next free name
        wait_for(lambda: files_in(embedded.work() / "archive") == [GOOD_A], message="archived")
        wait_for(lambda: (embedded.work() / "refused" / f"{HOSTILE}.reason.json.1").is_file(),
                 message="the refused entry's reason")
    reason = orjson.loads((embedded.work() / "error" / f"{BAD}.reason.json.1").read_bytes())
    assert reason["file"] == BAD and reason["reason"]


def test_a_sparse_file_is_refused_unread(embedded: PosBus, tmp_path: Path) -> None:
    # Given a 2 GiB file (just under the size limit) that is nearly all holes
    sparse = embedded.inbox() / ".SALES_0042_SPARSE.DAT"
    with sparse.open("wb") as out:
        out.write(_valid(1))
        out.truncate((2 << 30) - 4096)
    watch = InodeWatch([sparse], IN_ACCESS)  # reads only: opening it is how it is checked
    with embedded.running_source(embedded.source()):
        sparse.rename(embedded.inbox() / "SALES_0042_SPARSE.DAT")
        drop(embedded.inbox(), GOOD_A, _valid(2))
        wait_for(lambda: embedded.events("pos_file.refused") != [], message="refused")
        wait_for(lambda: files_in(embedded.work() / "archive") == [GOOD_A], message="archived")
    (refused,) = embedded.events("pos_file.refused")
    assert refused["reason"] == "sparse" and "holes" in refused["error"]
    assert watch.events() == []  # not one byte of it was read (nor hashed)


def test_a_file_the_bus_may_not_read_is_refused_as_permission_denied(
        embedded: PosBus) -> None:
    # Given a file its owner made unreadable (mode 000); the source thread meets the kernel's
    # permission checks even when the tests run as root (see the helper)
    locked = drop(embedded.inbox(), "SALES_0042_LOCKED.DAT", _valid(1))
    locked.chmod(0)
    with embedded.running_source(embedded.source(), prepare=without_file_permission_override):
        drop(embedded.inbox(), GOOD_A, _valid(2))
        wait_for(lambda: embedded.events("pos_file.refused") != [], message="refused")
        wait_for(lambda: files_in(embedded.work() / "archive") == [GOOD_A], message="archived")
    (refused,) = embedded.events("pos_file.refused")
    assert refused["reason"] == "permission_denied", refused
    assert (embedded.work() / "refused" / "SALES_0042_LOCKED.DAT").exists()


def test_open_claimed_names_a_file_cut_short_or_replaced(tmp_path: Path) -> None:
    path = tmp_path / "F.DAT"
    path.write_bytes(b"x" * 100)
    listed = os.lstat(path)
    folder = Folder.open(tmp_path)
    try:
        os.truncate(path, 10)
        with pytest.raises(RefusedEntry) as cut:
            open_claimed(folder, "F.DAT", listed, max_size=1000)
        assert cut.value.reason == "truncated"
        (tmp_path / "G.DAT").write_bytes(b"y" * 100)
        os.replace(tmp_path / "G.DAT", path)  # another file (inode) under the name
        with pytest.raises(RefusedEntry) as other:
            open_claimed(folder, "F.DAT", listed, max_size=1000)
        assert other.value.reason == "replaced"
    finally:
        folder.close()


def _config_error(bus: PosBus, work: Path) -> ConfigError:
    config = PosFileSourceConfig(inboxes=[InboxConfig(path="inbox", work=str(work))],
                                 layout=str(DAILY), pattern="*.DAT", node="node-a")
    with pytest.raises(ConfigError) as caught:
        PosFileSource(config, bus.bus.context("tills"))
    return caught.value


@pytest.mark.parametrize("where, prepare, message", [
    ("inbox/work", None, "is inside the inbox"),
    ("inbox", None, "is inside the inbox"),
    ("open", lambda p: (p.mkdir(), p.chmod(0o777)), "writable by every user"),
    ("link", lambda p: p.symlink_to(p.parent / "inbox", target_is_directory=True),
     "is a symbolic link"),
    ("nowhere/work", None, "does not exist"),
])
def test_work_folders_where_tills_could_reach_them_are_refused_at_start(
        embedded: PosBus, where: str, prepare: Callable[[Path], object] | None,
        message: str) -> None:
    path = embedded.root / where
    if prepare is not None:
        prepare(path)
    error = _config_error(embedded, path)
    assert message in str(error) and error.context["field"] == "inboxes[0].work", str(error)


def _a_shared_group() -> int | None:
    """A group that other accounts of this machine are in (e.g. a daemon's), if any."""
    return next((g.gr_gid for g in grp.getgrall() if _group_has_others(g.gr_gid)), None)


def test_a_work_folder_group_writable_by_a_shared_inbox_group_is_refused(
        embedded: PosBus) -> None:
    # Given an inbox and a work folder of a group other accounts are in, the work folder g+w
    gid = _a_shared_group()
    if gid is None:
        pytest.skip("no group with other accounts on this machine")
    work = embedded.root / "shared.work"
    work.mkdir()
    try:
        for path in (embedded.inbox(), work):
            os.chown(path, -1, gid)
    except PermissionError:
        pytest.skip(f"this user cannot give folders to group {gid}")
    work.chmod(0o770)
    # Then the source refuses to start on it (the tills' group could swap its folders)
    error = _config_error(embedded, work)
    assert f"is writable by the inbox's group (gid {gid})" in str(error), str(error)
    work.chmod(0o750)  # and takes it once the group may not write it
    PosFileSource(PosFileSourceConfig(inboxes=[InboxConfig(path="inbox", work=str(work))],
                                      layout=str(DAILY), pattern="*.DAT"),
                  embedded.bus.context("tills")).close()


def test_the_default_work_folder_is_beside_the_inbox(embedded: PosBus) -> None:
    with embedded.running_source(embedded.source()):
        drop(embedded.inbox(), GOOD_A, _valid(1))
        wait_for(lambda: files_in(embedded.work() / "archive") == [GOOD_A], message="archived")
    assert sorted(os.listdir(embedded.work())) == sorted(ROLES)
    assert os.listdir(embedded.inbox()) == []
    assert stat.S_IMODE(os.stat(embedded.work() / "archive").st_mode) & 0o027 == 0


def test_a_file_left_in_the_old_layout_resumes_once_moved_as_documented(
        embedded: PosBus) -> None:
    # Given a file an earlier version claimed into inbox/processing/node-a/ and had begun to
    # publish (its ledger entry points there), moved by the operator into the new work folder
    data = _valid(5)
    sha = hashlib.sha256(data).hexdigest()
    old = embedded.inbox() / "processing" / "node-a" / GOOD_A
    ledger = FileLedger(embedded.bus.context("tills").cursors, "node-a")
    ledger.put(FileEntry(store="0042", sha256=sha, name=GOOD_A, size=len(data), node="node-a",
                         claimed_as=str(old), records=3))
    moved = embedded.work() / "processing" / "node-a" / GOOD_A
    moved.parent.mkdir(parents=True)
    moved.write_bytes(data)
    # When the source starts, it says where the ledger still points, and finishes the file
    with embedded.running_source(embedded.source()):
        wait_for(lambda: files_in(embedded.work() / "archive") == [GOOD_A], message="archived")
    entry = ledger.get("0042", sha)
    assert entry is not None and (entry.state, entry.confirmed) == ("archived", 3)
    assert embedded.queued() == 3


class _RacedWorkFolders(WorkFolders):
    """Work folders whose every mkdir is beaten by another node starting on the same root."""

    def _make(self, parent: Folder, path: Path) -> Folder:
        os.mkdir(path)  # the other node, between our "not there" and our mkdir
        return super()._make(parent, path)


def test_two_nodes_making_the_work_folders_at_once_both_start(tmp_path: Path) -> None:
    # Given a work root whose folders another node creates while this one does
    names = {role: role for role in ROLES}
    alarms: list[str] = []
    folders = _RacedWorkFolders(tmp_path / "inbox.work", names, "node-a",
                                inbox_gid=os.getgid(), alarm=lambda e, d: alarms.append(e))
    # When it opens them, then it holds the folders the other node made, and raises nothing
    folders.open()
    try:
        assert sorted(os.listdir(tmp_path / "inbox.work")) == sorted(ROLES)
        assert os.listdir(tmp_path / "inbox.work" / "processing") == ["node-a"]
        assert folders.get("archive").path == tmp_path / "inbox.work" / "archive"
        assert alarms == []
    finally:
        folders.close()
