"""A SIGTERM stops a running bus (and the fake systems) whichever of its threads the kernel
hands it to.

CPython runs signal handlers in the main thread only; when the kernel delivers a process's
SIGTERM to another thread (it may pick any thread that does not block it), the main thread has
to wake by itself to run the handler (``integration_bus/threads.py``). Here the signal goes to
a thread other than the main one on purpose (``tgkill``). By chance it did so in two of about
eight supervised stops in the test suite, and ``bus worker`` then never stopped.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from integration_bus.connector import stop_on_signals, wait_for_stop
from tests.conftest import write_config
from tests.support.probe import wait_for


def _tgkill(pid: int, tid: int, signum: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.tgkill(pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill({pid}, {tid}) failed")


def _other_threads(pid: int) -> list[int]:
    return sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)


@pytest.mark.parametrize("command", [["worker"], ["run", "--no-sources"]])
@pytest.mark.parametrize("broker", ["embedded", "rabbitmq"])
def test_a_sigterm_delivered_to_any_thread_stops_the_bus(
        tmp_path: Path, command: list[str], broker: str,
        request: pytest.FixtureRequest) -> None:
    url = "" if broker == "embedded" else f'url: "{request.getfixturevalue("rabbitmq_url")}", '
    # Given a bus whose routes run in lanes of their own (threads beside the main one)
    config_dir = write_config(tmp_path, f"""
        broker: {{{url}prefetch: 50, batch_size: 10}}
        store: {{url: sqlite:///var/bus.db}}
        sinks:
          a: {{connector: jsonl, path: var/a.jsonl}}
          b: {{connector: jsonl, path: var/b.jsonl}}
        routes:
          orders: {{from: [order.created], to: [a]}}
          stock: {{from: [stock.changed], to: [b]}}
        """)
    log = tmp_path / "bus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "integration_bus", *command, "--config-dir", str(config_dir),
             "--migrate"], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "BUS_LOG_LEVEL": "info"})
    # When its SIGTERM reaches a thread other than the main one, once both lanes consume
    # Then it still stops cleanly (in-flight work finished, exit 0)
    _stops_on_a_thread_signal(proc, log, b"worker.consuming", 2)


@pytest.mark.parametrize("system", [["erp", "--port", "0"],
                                    ["shop", "--port", "0", "--orders", "0"]])
def test_a_fake_system_stops_on_a_sigterm_delivered_to_any_thread(
        tmp_path: Path, system: list[str]) -> None:
    # Given a fake ERP or shop started as `bus sim ...` (its server in a thread of its own)
    log = tmp_path / "sim.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "integration_bus", "sim", *system],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    # When its SIGTERM reaches the server's thread, Then it stops and exits 0
    _stops_on_a_thread_signal(proc, log, b"fake ", 1)


def _stops_on_a_thread_signal(proc: subprocess.Popen[bytes], log: Path, ready: bytes,
                              count: int) -> None:
    """Once ``ready`` is in ``log`` ``count`` times, SIGTERM the newest thread of ``proc``
    other than its main one; the process must exit 0 within 30 s."""
    try:
        wait_for(lambda: log.read_bytes().count(ready) >= count or proc.poll() is not None,
                 timeout=60, message=f"{ready!r} in the log")
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        threads = _other_threads(proc.pid)
        assert threads, "the process runs no thread besides the main one"
        _tgkill(proc.pid, threads[-1], signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("a SIGTERM that reached a thread other than the main one was ignored:"
                        "\n" + log.read_text(errors="replace")[-3000:])
        assert code == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_wait_for_stop_ends_when_set_or_at_its_timeout() -> None:
    stop = threading.Event()
    started = time.monotonic()
    assert wait_for_stop(stop, 0.3) is False
    assert time.monotonic() - started >= 0.3
    assert wait_for_stop(stop, 0) is False
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    assert wait_for_stop(stop) is True  # no timeout: until set
    timer.join()


def test_stop_on_signals_sets_the_event_calls_then_and_puts_the_handlers_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    called = threading.Event()
    with stop_on_signals(then=called.set) as stop:
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        assert wait_for_stop(stop, 10)
        assert called.wait(10)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_then_that_fails_does_not_stop_the_next_signal_from_calling_it() -> None:
    calls: list[int] = []
    second = threading.Event()

    def then() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the first call fails")
        second.set()

    with stop_on_signals(then=then) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: len(calls) == 1, timeout=10, message="the first call")
        assert stop.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        assert second.wait(10)


# The main thread holds the stop event's lock when the signal lands (as it does inside
# stop.wait(), or inside stop.set() in the handler of a signal just before: the supervisor of
# `bus worker --processes 2` sends its children two SIGTERMs; one of them hung in CI so).
HOLDS_THE_LOCK = """
import signal, sys, time
from integration_bus.threads import stop_on_signals
with stop_on_signals() as stop:
    with stop._cond:  # the lock Event.set() and Event.wait() take
        signal.raise_signal(signal.SIGTERM)
        time.sleep(0.2)  # the handler runs here, the lock held
    sys.exit(0 if stop.wait(10) else 3)
"""


def test_a_signal_that_lands_while_the_main_thread_holds_the_events_lock_still_stops() -> None:
    proc = subprocess.run([sys.executable, "-c", HOLDS_THE_LOCK], capture_output=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
