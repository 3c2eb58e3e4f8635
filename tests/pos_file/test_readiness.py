"""Readiness policies on real files, with the clocks handed in (no waiting in tests)."""

from __future__ import annotations

import os
from pathlib import Path

from connectors.pos_file.config import ReadinessConfig
from connectors.pos_file.folders import ROLES, WorkFolders
from connectors.pos_file.inbox import Inbox, Listed
from connectors.pos_file.readiness import Readiness


class Clocks:
    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 100.0

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def inbox(tmp_path: Path) -> Inbox:
    work = WorkFolders(tmp_path.with_name(tmp_path.name + ".work"), {r: r for r in ROLES}, "n",
                       inbox_gid=os.getgid(), alarm=lambda event, detail: None)
    box = Inbox(tmp_path, None, work)
    box.open()
    return box


def listed(box: Inbox, name: str) -> Listed:
    return Listed(box, name, os.lstat(box.path / name))


def test_stable_needs_unchanged_polls_and_age(tmp_path: Path) -> None:
    clocks = Clocks()
    ready = Readiness(ReadinessConfig(policy="stable", stable_polls=3, min_age="1.9s"),
                      poll_interval=0.5, clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    box, path = inbox(tmp_path), tmp_path / "F.DAT"
    path.write_bytes(b"part")
    os.utime(path, (clocks.wall, clocks.wall))
    answers = []
    for _ in range(3):  # three polls, but the file is not 1.9 s old yet
        answers.append(ready.ready(listed(box, "F.DAT")))
        clocks.tick(0.5)
    assert answers == [False, False, False]
    with path.open("ab") as out:  # the writer goes on: counting starts again
        out.write(b" more")
    os.utime(path, (clocks.wall, clocks.wall))
    answers = []
    for _ in range(6):
        answers.append(ready.ready(listed(box, "F.DAT")))
        clocks.tick(0.5)
    assert answers == [False, False, False, False, True, False]
    assert ready.waiting() == 1  # after True it starts over (a new file under the name)


def test_event_driven_looks_are_not_polls(tmp_path: Path) -> None:
    clocks = Clocks()
    ready = Readiness(ReadinessConfig(policy="stable", stable_polls=2, min_age=0),
                      poll_interval=0.5, clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    box = inbox(tmp_path)
    (tmp_path / "F.DAT").write_bytes(b"x")
    os.utime(tmp_path / "F.DAT", (clocks.wall, clocks.wall))
    assert [ready.ready(listed(box, "F.DAT")) for _ in range(5)] == [False] * 5
    clocks.tick(0.5)
    assert ready.ready(listed(box, "F.DAT"))


def test_a_marker_older_than_its_file_does_not_count(tmp_path: Path) -> None:
    ready = Readiness(ReadinessConfig(policy="marker"), poll_interval=0.5)
    box = inbox(tmp_path)
    data, marker = tmp_path / "F.DAT", tmp_path / "F.DAT.done"
    data.write_bytes(b"x")
    assert not ready.ready(listed(box, "F.DAT"))
    marker.touch()
    os.utime(marker, ns=(0, os.lstat(data).st_mtime_ns - 1_000_000_000))  # a stale marker
    assert not ready.ready(listed(box, "F.DAT"))
    os.utime(marker, ns=(0, os.lstat(data).st_mtime_ns))
    assert ready.ready(listed(box, "F.DAT"))
    assert ready.ignored("F.DAT.done") and ready.ignored(".F.DAT") and ready.ignored("F.tmp")
    assert ready.data_name("F.DAT.done") == "F.DAT"
