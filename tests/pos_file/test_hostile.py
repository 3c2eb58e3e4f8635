"""Hostile inbox entries (issue: symlinks, hardlinks, FIFOs, names with '..' or odd bytes, 0-byte
and huge files): each refused with its typed reason, moved to refused/, never followed out of the
inbox; a canary file outside the inbox is never opened (watched with inotify on its inode, which
sees opens through any path, links included). Attacks on the work folders themselves:
test_work_folders.py."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from connectors.pos_file.inbox import shown
from connectors.pos_file.lane import daily_file_bytes
from tests.pos_file.support import IN_OPEN_OR_READ, InodeWatch, PosBus, daily_layout, drop, files_in
from tests.support.probe import wait_for

pytestmark = pytest.mark.rabbitmq


def _valid(seed: int) -> bytes:
    return daily_file_bytes(daily_layout(), store="0042", records=3, seed=seed)


def _plant(inbox: Path, outside: Path) -> tuple[dict[str, str], list[Path]]:
    """Create the hostile entries; returns {name: expected reason} and paths to watch."""
    canary = outside / "canary.DAT"
    canary.write_bytes(_valid(99))
    expected: dict[str, str] = {}
    (inbox / "SALES_0001_link.DAT").symlink_to(canary)
    expected["SALES_0001_link.DAT"] = "symlink"
    (inbox / "SALES_0002_dirlink.DAT").symlink_to(outside)
    expected["SALES_0002_dirlink.DAT"] = "symlink"
    os.link(canary, inbox / "SALES_0003_hard.DAT")
    expected["SALES_0003_hard.DAT"] = "hardlink"
    os.mkfifo(inbox / "SALES_0004_fifo.DAT")
    expected["SALES_0004_fifo.DAT"] = "not_regular"
    odd = ["SALES_0005..x.DAT", os.fsdecode(b"SALES_0006_\xff\xfe.DAT"), "SALES_0007_\n.DAT",
           "SALES_0008_\x1b[31m.DAT", "SALES_0009_$(touch pwned).DAT"]
    for n, name in enumerate(odd):
        (inbox / name).write_bytes(_valid(n))
        expected[name] = "bad_name"
    drop(inbox, "SALES_0010_empty.DAT", b"")
    expected["SALES_0010_empty.DAT"] = "empty"
    with (inbox / "SALES_0011_huge.DAT").open("wb") as huge:
        huge.truncate(3 << 30)  # sparse: 3 GiB on paper, over the 2 GiB default limit
    expected["SALES_0011_huge.DAT"] = "too_large"
    watched = [canary, inbox / "SALES_0004_fifo.DAT", inbox / "SALES_0011_huge.DAT",
               *(inbox / name for name in odd)]
    return expected, watched


def test_hostile_entries_are_refused_with_their_reason_and_never_read(
        pos_bus: PosBus, tmp_path: Path) -> None:
    # Given a canary outside the inbox, hostile entries in it, and one honest file
    inbox, work = pos_bus.inbox(), pos_bus.work()
    outside = tmp_path / "outside"
    outside.mkdir()
    expected, watched = _plant(inbox, outside)
    watch = InodeWatch(watched, IN_OPEN_OR_READ)
    try:
        drop(inbox, "SALES_0042_20240301.DAT", _valid(1))
        # When the source runs
        with pos_bus.running_source(pos_bus.source()):
            wait_for(lambda: len(pos_bus.events("pos_file.refused")) == len(expected),
                     message="every hostile entry refused")
            wait_for(lambda: files_in(work / "archive") == ["SALES_0042_20240301.DAT"],
                     message="the honest file archived")
        # Then each was refused with its typed reason ...
        refused = {e["file"]: e["reason"] for e in pos_bus.events("pos_file.refused")}
        assert refused == {shown(name): reason for name, reason in expected.items()}
        # ... counted as source-level rejections (bus status)
        (rejected,) = pos_bus.bus.store.source_rejections(newest=len(expected))
        assert (rejected.reason, rejected.count) == ("refused", len(expected))
        assert sorted(rejected.newest) == sorted(refused)
        # ... moved (the entry itself, never a link's target) to refused/ with a reason file
        moved = set(os.listdir(work / "refused"))
        for name, reason in expected.items():
            assert name in moved, name
            detail = orjson.loads((work / "refused" / f"{name}.reason.json").read_bytes())
            assert detail["reason"] == reason
        assert os.listdir(inbox) == []
        # ... and none of them, nor the canary outside, was ever opened
        assert watch.events() == []
        canary = outside / "canary.DAT"
        assert canary.read_bytes() == _valid(99) and os.lstat(canary).st_nlink == 2
        assert pos_bus.queued() == 3  # only the honest file's records were published
        # (the watch itself works: our own open of the canary is seen)
        canary.read_bytes()
        assert "canary.DAT" in {name for name, _ in watch.events()}
    finally:
        watch.close()
