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

R = TypeVar("R")

_STOP = object()


class _Failed:
    """What a lane hands back for work that raised (a result may itself be an exception)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Lanes(Generic[H, T]):
    """``call(items, work)``: each item handled by ``work(handler, position, item)`` in its
    lane; its result or the exception it raised, in order. Lanes and their handlers (from
    ``make(index)``) start on first use; ``close()`` stops them and calls ``dispose`` on each
    handler in its own thread."""

    def __init__(self, count: int, make: Callable[[int], H], key: Callable[[T], str],
                 dispose: Callable[[H], None], name: str) -> None:
        self._count, self._make = count, make
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
                index, item, work, done = cast(
                    tuple[int, T, Callable[[H, int, T], object], "Future[object]"], job)
                try:
                    result = work(handler, index, item)
                except BaseException as exc:  # handed back to the worker, classified there
                    done.set_result(_Failed(exc))
                else:
                    done.set_result(result)
        finally:
            self._dispose(handler)

    def call(self, items: Sequence[T], work: Callable[[H, int, T], R]
             ) -> list[R | BaseException]:
        """``work(handler, position, item)`` for each item in its lane: its result, or the
        exception it raised, in order."""
        self._start()
        futures: list[Future[object]] = []
        for index, item in enumerate(items):
            done: Future[object] = Future()
            lane = zlib.crc32(self._key(item).encode()) % self._count
            self._queues[lane].put((index, item, work, done))
            futures.append(done)
        out: list[R | BaseException] = []
        for future in futures:
            result = future.result()
            out.append(result.error if isinstance(result, _Failed) else cast(R, result))
        return out

    def close(self) -> None:
        with self._lock:
            for inbox in self._queues:
                inbox.put(_STOP)
            for thread in self._threads:
                thread.join(30)
            self._queues, self._threads = [], []
