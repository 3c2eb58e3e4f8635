"""Lanes: a worker batch of orders worked on by a few long-lived threads at once.

Each lane is one thread with its own handler (its own sink instances: publishers and clients
are confined to the thread that opened them). An order always goes to the same lane (by a hash
of its key), so two copies of one order in a batch never race each other's saga.
"""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar, cast

__all__ = ["Lanes"]

H = TypeVar("H")
T = TypeVar("T")

_STOP = object()


class Lanes(Generic[H, T]):
    """``run(items)``: each item handled by ``work(handler, item)`` in its lane; one outcome
    per item, in order (None, or the exception it raised). Lanes and their handlers (from
    ``make(index)``) start on first use; ``close()`` stops them and calls ``dispose`` on each
    handler in its own thread."""

    def __init__(self, count: int, make: Callable[[int], H], work: Callable[[H, T], None],
                 key: Callable[[T], str], dispose: Callable[[H], None], name: str) -> None:
        self._count, self._make, self._work = count, make, work
        self._key, self._dispose, self._name = key, dispose, name
        self._queues: list[queue.SimpleQueue[object]] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _start(self) -> None:
        with self._lock:
            if self._threads:
                return
            for index in range(self._count):
                inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
                ready: Future[None] = Future()
                thread = threading.Thread(target=self._lane, args=(index, inbox, ready),
                                          name=f"{self._name}:lane{index}", daemon=True)
                thread.start()
                ready.result()  # a handler that cannot be built fails here, in the caller
                self._queues.append(inbox)
                self._threads.append(thread)

    def _lane(self, index: int, inbox: queue.SimpleQueue[object], ready: Future[None]) -> None:
        try:
            handler = self._make(index)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            while (job := inbox.get()) is not _STOP:
                item, done = cast(tuple[T, "Future[BaseException | None]"], job)
                try:
                    self._work(handler, item)
                except BaseException as exc:  # handed back to the worker, classified there
                    done.set_result(exc)
                else:
                    done.set_result(None)
        finally:
            self._dispose(handler)

    def run(self, items: Sequence[T]) -> list[BaseException | None]:
        self._start()
        futures: list[Future[BaseException | None]] = []
        for item in items:
            done: Future[BaseException | None] = Future()
            lane = zlib.crc32(self._key(item).encode()) % self._count
            self._queues[lane].put((item, done))
            futures.append(done)
        return [f.result() for f in futures]

    def close(self) -> None:
        with self._lock:
            for inbox in self._queues:
                inbox.put(_STOP)
            for thread in self._threads:
                thread.join(30)
            self._queues, self._threads = [], []
