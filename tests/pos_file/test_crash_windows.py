"""Crash windows (issue: "after parse, after k of n confirms, after all confirms but before the
move"): a restart resumes with nothing lost, no duplicate effect, the file archived exactly once.

Two ways to crash the source:
- in process, an :class:`InjectedCrash` (a BaseException nothing in the source catches) raised at
  the named checkpoint; the source object and its broker connection are then abandoned.
- in a child process killed with SIGKILL at the checkpoint (no cleanup at all).

Every run has its own 1,000-record file and a seeded crash point (for "k of n confirms", k is
drawn from the seed). The default suite runs 20 injected runs per window and one SIGKILL per
checkpoint; ``POS_FILE_FULL=1`` makes that 20 SIGKILLed runs per window (by hand).

A worker delivers everything into the probe target throughout, so "effects" are real sink
deliveries through the idempotency ledger.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.pos_file.lane import daily_file_bytes
from tests.pos_file.support import (
    REPO,
    PosBus,
    daily_layout,
    drop,
    files_in,
    open_pos_bus,
    source_yaml,
)
from tests.support.probe import wait_for

pytestmark = pytest.mark.rabbitmq

RECORDS = 1000
WINDOW = 100  # 10 confirmed windows per file
WINDOWS = {"after_parse": "scanned", "after_k_of_n_confirms": "confirmed",
           "after_all_confirms_before_move": "published"}
EXTRA = {"after_window_saved": "saved", "after_move_before_ledger": "moved"}


class InjectedCrash(BaseException):
    """Stands for the process dying at a checkpoint (BaseException: no handler sees it)."""


@dataclass
class Run:
    number: int
    seed: int  # of the file's content
    point: str
    nth: int

    @property
    def name(self) -> str:
        return f"SALES_0042_{self.number:05d}.DAT"

    def data(self) -> bytes:
        return daily_file_bytes(daily_layout(), store="0042", records=RECORDS, seed=self.seed,
                                seq=self.number)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data()).hexdigest()


@pytest.fixture
def crash_bus(tmp_path: Path, rabbitmq_url: str) -> Iterator[PosBus]:
    # polling only: these tests restart the source 100+ times, and stopping watchdog's inotify
    # observer waits out its 0.5 s move-grouping delay each time (discovery is not under test)
    bus = open_pos_bus(tmp_path, rabbitmq_url,
                       sources=source_yaml(extra=f"window: {WINDOW}\nwatch: polling"))
    try:
        yield bus
    finally:
        bus.close()


def _nth(point: str, rng: random.Random) -> int:
    """Which occurrence of the checkpoint to die at: a random window k of n for the
    per-window points, else the only one."""
    return rng.randint(1, RECORDS // WINDOW) if point in ("confirmed", "saved") else 1


def _crash_in_process(bus: PosBus, run: Run) -> None:
    reached = 0

    def checkpoint(name: str, info: Any) -> None:
        nonlocal reached
        if name == run.point:
            reached += 1
            if reached == run.nth:
                raise InjectedCrash(f"{run.point} #{run.nth}")

    source = bus.source(checkpoint=checkpoint)
    publisher = bus.bus.publisher()
    stop, died = threading.Event(), threading.Event()

    def body() -> None:
        try:
            source.run(publisher, stop)
        except InjectedCrash:
            died.set()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(60)
    assert died.is_set(), f"{run.name} never reached {run.point} #{run.nth}"
    publisher.close()  # the dead process's connection drops
    source.close()  # and its descriptors go (60 crashes held about 1,000 open in the worker)


def _crash_in_child(bus: PosBus, run: Run) -> None:
    child = subprocess.run(
        [sys.executable, "-m", "tests.pos_file.crash_child", str(bus.root / "config"), "tills",
         run.point, str(run.nth)], cwd=REPO, capture_output=True, timeout=90)
    assert child.returncode == -9, (run, child.returncode, child.stderr.decode()[-2000:])


def _restart_until_archived(bus: PosBus, run: Run) -> None:
    # Archived means moved *and* recorded: a crash at "moved" leaves the file in archive/
    # already, and the restarted source must still record it (stopping it once the file is
    # there stopped it before it had: the file stayed "published", once, in CI)
    def archived() -> bool:
        if run.name not in files_in(bus.work() / "archive"):
            return False
        entry = bus.entry("0042", run.sha256)
        return entry is not None and entry.state == "archived"

    with bus.running_source(bus.source()):
        wait_for(archived, timeout=60, message=f"{run.name} archived after the restart")


def _check(bus: PosBus, runs: list[Run]) -> None:
    """0 lost, 0 duplicate effects, each file archived exactly once and nowhere else."""
    wait_for(lambda: bus.target.count() == RECORDS * len(runs), timeout=120,
             message=f"{RECORDS * len(runs)} effects")
    assert bus.target.duplicates() == {}
    by_key = set(bus.target.effects)
    for run in runs:
        sha = run.sha256
        expected = {f"pos:0042:{sha}:{line}" for line in range(2, RECORDS + 2)}
        assert expected <= by_key, f"{run}: {len(expected - by_key)} records lost"
        entry = bus.entry("0042", sha)
        assert entry is not None and (entry.state, entry.confirmed) == ("archived", RECORDS), run
    archive = files_in(bus.work() / "archive")
    assert archive == sorted(r.name for r in runs)  # once each: no NAME.1 copies
    for folder in ("error", "duplicate", "refused", "processing/node-a"):
        assert files_in(bus.work() / folder) == [], folder
    assert files_in(bus.inbox()) == []
    archived = [e["file"] for e in bus.events("pos_file.archived")]
    assert sorted(archived) == sorted(r.name for r in runs)
    assert bus.bus.store.dead_letters() == []


def _planned(points: dict[str, str], count: int, seed: int) -> list[Run]:
    """``count`` seeded runs per checkpoint: each its own file content and crash occurrence."""
    rng = random.Random(seed)
    runs: list[Run] = []
    for point in points.values():
        for _ in range(count):
            runs.append(Run(len(runs), rng.randrange(1 << 30), point, _nth(point, rng)))
    return runs


def _exercise(bus: PosBus, runs: list[Run], crash: Callable[[PosBus, Run], None]) -> None:
    with bus.running_worker():
        for run in runs:
            # Given a 1,000-record file in the inbox
            drop(bus.inbox(), run.name, run.data())
            # When the source dies at the checkpoint, then starts again
            crash(bus, run)
            _restart_until_archived(bus, run)
        # Then nothing was lost or doubled, and every file was archived exactly once
        _check(bus, runs)


FULL = bool(os.environ.get("POS_FILE_FULL"))
RUNS = 20  # seeded runs per window, as the issue asks


def test_twenty_injected_crashes_at_each_window(crash_bus: PosBus) -> None:
    runs = _planned(WINDOWS, RUNS, seed=20261127)
    _exercise(crash_bus, runs, _crash_in_process)
    # the k-of-n window really republished confirmed records, and the ledger absorbed them
    assert crash_bus.bus.store.count_events("duplicate") > 0


def test_injected_crash_at_the_other_checkpoints(crash_bus: PosBus) -> None:
    _exercise(crash_bus, _planned(EXTRA, 3, seed=11), _crash_in_process)


def test_sigkilled_child_at_each_window(crash_bus: PosBus) -> None:
    """A real SIGKILL at each named point, once each; 20 times each with POS_FILE_FULL=1 (by
    hand: about two minutes more)."""
    _exercise(crash_bus, _planned({**WINDOWS, **EXTRA}, 20 if FULL else 1, seed=4242),
              _crash_in_child)
