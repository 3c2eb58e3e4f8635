"""The supervisor's stop: children that finish in time are waited for, one that ignores its
SIGTERM is killed once the grace has passed (``integration_bus.supervisor``)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from integration_bus.supervisor import supervise
from tests.support.probe import wait_for

# a child that notes its pid, then waits for good; "stubborn" ignores SIGTERM
CHILD = """
import os, pathlib, signal, sys, threading
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1], os.environ["BUS_PROCESS_INDEX"]).write_text(str(os.getpid()))
threading.Event().wait()
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(("kind", "code"), [("stubborn", 1), ("plain", 0)])
def test_the_supervisor_stops_its_children_within_the_grace(tmp_path: Path, kind: str,
                                                            code: int) -> None:
    # Given two supervised children (SIGTERM ends one "plain"; a "stubborn" one ignores it)
    stop = threading.Event()
    result: dict[str, int] = {}
    command = [sys.executable, "-c", CHILD, str(tmp_path), kind]
    runner = threading.Thread(target=lambda: result.update(
        code=supervise(command, stop=stop, processes=2, stop_grace=1.0)))
    runner.start()
    try:
        wait_for(lambda: all((tmp_path / i).exists() and (tmp_path / i).read_text()
                             for i in ("0", "1")), timeout=30, message="both children up")
        pids = [int((tmp_path / i).read_text()) for i in ("0", "1")]
    finally:
        # When the supervisor is told to stop
        stop.set()
        runner.join(30)
    # Then it returns within the grace (plus the kill), every child reaped: 1 when it had to
    # kill them, 0 when SIGTERM ended them
    assert not runner.is_alive()
    assert result == {"code": code}
    assert all(_gone(pid) for pid in pids)
