"""Fixtures for the pos_file connector tests.

``rabbitmq_url`` is overridden here with the same contract as the root fixture (a fresh vhost
per test, deleted afterwards) but without its cost on the critical path: ``rabbitmqctl`` boots
an Erlang VM per call (~0.6 s, three calls per test), so vhosts are made ahead in a background
thread and deleted in the background; the session waits for every deletion before it ends.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RABBIT_HOST, RABBIT_PORT, _require
from tests.pos_file.support import PosBus, open_pos_bus

AHEAD = 2  # vhosts kept ready


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


class VhostPool:
    """Fresh vhosts made ahead of use; used ones are deleted in the background."""

    def __init__(self) -> None:
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._wanted = threading.Semaphore(AHEAD)
        self._closed = threading.Event()
        self._deletions: list[subprocess.Popen[bytes]] = []
        self._maker = threading.Thread(target=self._make, daemon=True, name="vhost-maker")
        self._maker.start()

    def _make(self) -> None:
        while True:
            self._wanted.acquire()
            if self._closed.is_set():
                return
            vhost = f"bus-test-{uuid.uuid4().hex[:10]}"
            try:
                _ctl("add_vhost", vhost)
                _ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
            except (subprocess.SubprocessError, OSError) as exc:
                self._ready.put(exc)
                return
            self._ready.put(vhost)

    def take(self) -> str:
        got = self._ready.get(timeout=120)
        if isinstance(got, BaseException):
            raise got
        self._wanted.release()
        return got

    def release(self, vhost: str) -> None:
        self._deletions.append(subprocess.Popen(["rabbitmqctl", "-q", "delete_vhost", vhost],
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL))

    def close(self) -> None:
        self._closed.set()
        self._wanted.release()
        self._maker.join(120)
        while not self._ready.empty():
            left = self._ready.get_nowait()
            if isinstance(left, str):
                self.release(left)
        for process in self._deletions:
            process.wait(120)


@pytest.fixture(scope="session")
def vhost_pool() -> Iterator[VhostPool]:
    pool = VhostPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def rabbitmq_url(vhost_pool: VhostPool) -> Iterator[str]:
    """A fresh vhost on the shared broker, deleted afterwards (see the module docstring)."""
    _require("RabbitMQ", RABBIT_HOST, RABBIT_PORT)
    vhost = vhost_pool.take()
    try:
        yield f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{vhost}"
    finally:
        vhost_pool.release(vhost)


@pytest.fixture
def pos_bus(tmp_path: Path, rabbitmq_url: str) -> Iterator[PosBus]:
    """A bus on its own vhost: source ``tills`` on ``inbox/`` → route ``sales`` → probe."""
    bus = open_pos_bus(tmp_path, rabbitmq_url)
    try:
        yield bus
    finally:
        bus.close()
