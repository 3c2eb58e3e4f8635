"""Sink calls with deadlines: a hung target holds its own route's lane, and only for so long.

Each sink gets one helper thread (its calls stay on one thread, as sinks are thread-confined).
A lane hands it the envelopes of a batch and waits while they make progress: the deadline
restarts with every finished call, so a long batch of quick calls is fine, one call that
hangs is not. When a call outlives the deadline the lane stops waiting: that envelope fails
with :class:`SinkDeadlineExceeded` (in doubt: the retry's claim finds it, the ledger/lookup keeps
the effect single), the ones not yet sent fail the same way without having been sent, and the
sink counts as busy. While its abandoned call still hangs, the next batches are held back
(:class:`CircuitOpen`: no attempt counted, the route pauses) instead of stacking up behind it.

While it waits, the lane's thread may do work of its own that has no effect on the batch whose
call it waits for (``meanwhile``): the lane reads the next batch's deliveries off its socket
while a republish waits for its publisher confirms, and once it holds the whole next batch,
marks it and runs its pipelines (``Lane._prepare_ahead``; a store transaction, so that step
may block longer than a slice: the call's end or deadline is then seen a little later). A
``meanwhile`` that waits on descriptors adds :attr:`SinkCalls.wake_fd` to them: it is
readable as soon as a call makes progress, so the wait ends then, not at the slice's end.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager
from typing import Any

from integration_bus.connector import BatchSink, LookupSink, Sink
from integration_bus.envelope import Envelope
from integration_bus.errors import CircuitOpen, SinkDeadlineExceeded

#: index of an envelope in a call -> a context manager around its delivery
Around = Callable[[int], AbstractContextManager[Any]]
#: work for the waiting thread: given the longest it may block, True while it has more to do
Meanwhile = Callable[[float], bool]

#: s a ``meanwhile`` step may wait for I/O before the call is looked at (it ends sooner when the
#: call makes progress: :attr:`SinkCalls.wake_fd`)
MEANWHILE_SLICE = 0.05

__all__ = ["MEANWHILE_SLICE", "Meanwhile", "SinkCalls"]


class _WakePipe:
    """A non-blocking pipe: a sink's thread writes a byte when its call makes progress, the
    waiting thread watches the read end. Closed when no one holds it any more (a hung call's
    thread may write long after its lane stopped waiting: never into a descriptor number
    that was closed and given to another file since)."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe()
        os.set_blocking(self.read, False)
        os.set_blocking(self.write, False)

    def wake(self) -> None:
        try:
            os.write(self.write, b"\0")
        except BlockingIOError:  # full: the waiting thread has plenty to see already
            pass

    def drain(self) -> None:
        try:
            while os.read(self.read, 4096):
                pass
        except BlockingIOError:
            pass

    def __del__(self) -> None:
        for fd in (getattr(self, "read", None), getattr(self, "write", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:  # at interpreter exit: nothing to do
                    pass


class _Progress:
    def __init__(self, count: int, wake: _WakePipe | None = None) -> None:
        self.results: list[BaseException | object | None] = [_PENDING] * count
        self.done = 0
        self.cancelled = False
        self.cond = threading.Condition()
        self.wake = wake  # written to each time the call makes progress

    def notify(self) -> None:
        """Wake the waiting thread (call with ``cond`` held)."""
        self.cond.notify_all()
        if self.wake is not None:
            self.wake.wake()


_PENDING = object()


class SinkCalls:
    """Runs one lane's sink calls. ``close()`` stops waiting for hung calls (idempotent)."""

    def __init__(self, lane: str, meanwhile: Meanwhile | None = None) -> None:
        self._lane = lane
        #: run on the waiting (lane's) thread while a call is under way; it must have no effect
        #: on the batch whose call is under way (reading ahead, starting the next batch's
        #: step 1 and 2 are fine), and never raise
        self.meanwhile = meanwhile
        self._executors: dict[int, ThreadPoolExecutor] = {}
        self._busy: dict[int, Future[Any]] = {}  # id(sink) -> an abandoned call still running
        self._pipe: _WakePipe | None = None  # see wake_fd

    @property
    def wake_fd(self) -> int:
        """A descriptor that is readable while a call under way has made progress the waiting
        thread has not looked at yet (a ``meanwhile`` adds it to what it waits on)."""
        return self._wake().read

    def _wake(self) -> _WakePipe:
        if self._pipe is None:
            self._pipe = _WakePipe()
        return self._pipe

    def deliver(self, sink: Sink, envelopes: Sequence[Envelope], deadline: float,
                around: Around | None = None) -> list[BaseException | None]:
        """One outcome per envelope: None when delivered, else the error (the sink's own, or
        SinkDeadlineExceeded / CircuitOpen as described in the module docstring). ``around``
        (index -> context manager) wraps each single delivery on the sink's thread (tracing
        makes the envelope's sink span current with it)."""
        key = id(sink)
        hung = self._busy.get(key)
        if hung is not None:
            if not hung.done():
                busy = CircuitOpen(f"sink {sink.name} is still busy with a call that outlived "
                                   f"its {deadline:g} s deadline",
                                   sink=sink.name, retry_after_ms=int(deadline * 1000))
                return [busy] * len(envelopes)
            del self._busy[key]
        wake = self._wake() if self.meanwhile is not None else None
        if wake is not None:
            wake.drain()  # a late call's progress, looked at long ago
        progress = _Progress(len(envelopes), wake)
        future = self._executor(sink).submit(_run, sink, list(envelopes), progress, around)
        if not _wait(progress, len(envelopes), deadline, self.meanwhile,
                     wake.drain if wake is not None else None):
            self._busy[key] = future
            late = SinkDeadlineExceeded(
                f"sink {sink.name} did not answer within its {deadline:g} s deadline",
                sink=sink.name)
            with progress.cond:
                progress.cancelled = True
                return [late if r is _PENDING else r  # type: ignore[misc]
                        for r in progress.results]
        return progress.results  # type: ignore[return-value]

    def lookup(self, sink: LookupSink, envelope: Envelope, deadline: float) -> bool:
        """``sink.lookup(envelope)`` on the sink's thread, within ``deadline`` seconds; raises
        what the lookup raised, SinkDeadlineExceeded when it outlives the deadline, or
        CircuitOpen while an earlier abandoned call of the sink still hangs."""
        key = id(sink)
        hung = self._busy.get(key)
        if hung is not None:
            if not hung.done():
                raise CircuitOpen(f"sink {sink.name} is still busy with a call that outlived "
                                  f"its {deadline:g} s deadline", sink=sink.name,
                                  retry_after_ms=int(deadline * 1000))
            del self._busy[key]
        future = self._executor(sink).submit(sink.lookup, envelope)
        try:
            return future.result(timeout=deadline)
        except FutureTimeout:
            self._busy[key] = future
            raise SinkDeadlineExceeded(f"lookup at sink {sink.name} did not answer within its "
                                       f"{deadline:g} s deadline", sink=sink.name) from None

    def _executor(self, sink: Sink) -> ThreadPoolExecutor:
        executor = self._executors.get(id(sink))
        if executor is None:
            executor = self._executors[id(sink)] = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"sink:{self._lane}:{sink.name}")
        return executor

    def busy(self, sink: Sink) -> bool:
        """Whether an abandoned call of ``sink`` still hangs."""
        hung = self._busy.get(id(sink))
        return hung is not None and not hung.done()

    def close(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        self._executors.clear()
        self._busy.clear()
        self._pipe = None  # closed once a call still running lets go of it too


def _wait(progress: _Progress, count: int, deadline: float,
          meanwhile: Meanwhile | None = None, drain: Callable[[], None] | None = None) -> bool:
    """Wait until all ``count`` results are in; False when no call finished for ``deadline``.
    ``meanwhile`` runs in slices between looks at the call until it has nothing left to do;
    ``drain`` after each (what woke it is looked at now)."""
    with progress.cond:
        seen = progress.done
        until = time.monotonic() + deadline
        while progress.done < count:
            left = until - time.monotonic()
            if left <= 0:
                return False
            if meanwhile is not None:
                progress.cond.release()  # the sink's thread reports progress meanwhile
                try:
                    more = meanwhile(min(left, MEANWHILE_SLICE))
                    if drain is not None:
                        drain()
                finally:
                    progress.cond.acquire()
                if not more:
                    meanwhile = None
            else:
                progress.cond.wait(left)
            if progress.done != seen:
                seen = progress.done
                until = time.monotonic() + deadline
        return True


def _run(sink: Sink, envelopes: list[Envelope], progress: _Progress,
         around: Around | None = None) -> None:
    if isinstance(sink, BatchSink):
        try:
            errors: list[BaseException | None] = list(sink.deliver_many(envelopes))
        except Exception as exc:  # the whole batch failed the same way
            errors = [exc] * len(envelopes)
        with progress.cond:
            if not progress.cancelled:
                progress.results[:] = errors
                progress.done = len(envelopes)
            progress.notify()
        return
    for index, envelope in enumerate(envelopes):
        with progress.cond:
            if progress.cancelled:
                return
        if around is not None:
            with around(index):
                error = _deliver_one(sink, envelope)
        else:
            error = _deliver_one(sink, envelope)
        with progress.cond:
            if progress.cancelled:
                return
            if isinstance(error, CircuitOpen):  # the rest would be refused the same way
                for rest in range(index, len(envelopes)):
                    progress.results[rest] = error
                progress.done = len(envelopes)
                progress.notify()
                return
            progress.results[index] = error
            progress.done += 1
            progress.notify()


def _deliver_one(sink: Sink, envelope: Envelope) -> BaseException | None:
    try:
        sink.deliver(envelope)
        return None
    except Exception as exc:  # a sink's unexpected exception counts as transient
        return exc
