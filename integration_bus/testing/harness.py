"""A bus running in threads of the test process, and ``join()`` that waits until it is idle.

:func:`open_bus` builds and opens a :class:`~integration_bus.runtime.Bus` from a config dir or
from the text of a ``bus.yaml``; :func:`bus_running` runs its sources, relay and workers in
threads for the length of a ``with`` block (embedded mode or RabbitMQ, whatever the config
says) and stops them cleanly. :meth:`RunningBus.join` waits until nothing is left to do and,
like dramatiq's ``StubBroker.join(fail_fast=True)``, re-raises the error of the first message
that was dead-lettered, so a failing test shows the real traceback instead of a timeout.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from integration_bus.batch import Batch
from integration_bus.fate import DeadLetter
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from integration_bus.worker import Worker

__all__ = ["DeadLettered", "RunningBus", "bus_running", "open_bus", "write_config"]

CONFIG_FILE = "bus.yaml"
#: seconds join() waits for a worker of this process to report the error of a dead letter the
#: store already shows (it reports its batch once the settlement committed); past it, the
#: letter came from elsewhere and join() raises DeadLettered
LETTER_REPORT_GRACE = 5.0


class DeadLettered(AssertionError):
    """A message was dead-lettered while a test waited for the bus to be idle, and its error
    was not raised in this process (a source's rejection, a broker-side dead letter): the
    stored error type, message and traceback are the text of this assertion."""


def write_config(root: Path, text: str) -> Path:
    """Write ``text`` to ``root/config/bus.yaml``; return the config dir."""
    config_dir = root / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / CONFIG_FILE).write_text(text)
    return config_dir


def open_bus(config: Path | str, *, root: Path | None = None, registry: Registry | None = None,
             environ: Mapping[str, str] | None = None) -> Bus:
    """An opened Bus (store migrated, topology declared).

    ``config``: a config dir, or the text of a ``bus.yaml`` — then written to
    ``root/config/bus.yaml`` (``root`` is required: the project dir, e.g. ``tmp_path``).
    ``registry``: default every installed connector plugin. ``environ``: for ``${VAR}``
    interpolation (default the process environment). Raises ConfigError(s) as ``bus run``
    would. The caller closes it (``with open_bus(...) as bus`` or ``bus.close()``)."""
    if isinstance(config, str):
        if root is None:
            raise ValueError("open_bus(text) needs root= (the project dir to write it into)")
        config = write_config(root, config)
    registry = registry or Registry.from_entry_points()
    return Bus(load_config(config, registry, environ), registry=registry).open()


class RunningBus:
    """A bus whose sources, outbox relay and workers run in threads of this process.

    Build with :func:`bus_running` (or the ``running_bus`` pytest fixture). ``dead`` lists the
    errors of the messages this process's workers dead-lettered since the start, in order."""

    def __init__(self, bus: Bus, *, routes: Sequence[str] | None = None,
                 sources: Sequence[str] | None = None, workers: int = 1) -> None:
        self.bus = bus
        self.stop_event = threading.Event()
        self.dead: list[BaseException] = []
        self._reported = threading.Event()  # set once ``dead`` holds an error
        self._routes = routes
        self._sources = sources
        self._workers = workers
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._worker_list: list[Worker] = []
        self._letters_before = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> RunningBus:
        """Start the threads; return once each part was started. The bus must be open."""
        self._letters_before = _letter_count(self.bus)
        for index in range(self._workers):
            worker = self.bus.worker(self._routes, on_batch=self._on_batch)
            self.bus.watch_worker(f"worker:{index}", worker)
            self._worker_list.append(worker)
            self._spawn(f"worker:{index}", functools.partial(worker.run, self.stop_event))
        self._spawn("bus", lambda: self.bus.run(self.stop_event, routes=self._routes,
                                                sources=self._sources, workers=0))
        return self

    def stop(self, *, within: float = 30.0) -> None:
        """Stop every thread (each finishes what it holds) and re-raise the first error one of
        them raised. Idempotent. AssertionError when a thread is still alive after ``within``
        seconds."""
        self.stop_event.set()
        deadline = time.monotonic() + within
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = self.alive()
        assert not alive, f"the bus did not stop within {within} s: {', '.join(alive)} running"
        if self._errors:
            raise self._errors[0]

    def alive(self) -> list[str]:
        """The names of the bus's threads still running."""
        return [t.name for t in self._threads if t.is_alive()]

    def __enter__(self) -> RunningBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- waiting -------------------------------------------------------------------------------
    def join(self, *, timeout: float = 30.0, fail_fast: bool = True,
             quiet: float = 0.5) -> None:
        """Wait until the bus is idle: every route queue empty, nothing waiting in a retry tier
        or the outbox, no delivery held by a worker — and still so after ``quiet`` seconds
        without a batch handled (a consumer may hold prefetched messages the broker no longer
        counts). A source's input it has not read yet is not the bus's work: wait for that
        with a condition of your own first.

        ``fail_fast``: as soon as a message is dead-lettered, raise its error — the exception
        the sink or step raised (with its traceback) when a worker of this process
        dead-lettered it (waiting up to :data:`LETTER_REPORT_GRACE` for the worker to report
        a letter the store shows already), else :class:`DeadLettered` with the stored error and
        traceback.
        Raises AssertionError when the bus is still busy after ``timeout`` seconds (naming
        what it is busy with), or the error a thread of the bus died of."""
        deadline = time.monotonic() + timeout
        calm_since: float | None = None
        handled = -1
        while True:
            if self._errors:
                raise self._errors[0]
            if fail_fast:
                self._raise_dead_letter()
            busy = self._busy()
            now_handled = sum(w.state.handled for w in self._worker_list)
            if busy is None and now_handled == handled:
                if calm_since is None:
                    calm_since = time.monotonic()
                elif time.monotonic() - calm_since >= quiet:
                    return
            else:
                calm_since = None
            handled = now_handled
            if time.monotonic() > deadline:
                raise AssertionError(f"the bus is not idle after {timeout} s: "
                                     f"{busy or 'batches are still being handled'}")
            self.stop_event.wait(0.05)

    def _busy(self) -> str | None:
        """What the bus still has to do, or None."""
        bus = self.bus
        bindings = bus.topology.routes
        depths = bus.transport.queue_depths([b.queue for b in bindings])
        queued = {q: s.messages for q, s in depths.items() if s is not None and s.messages}
        if queued:
            return f"messages queued: {queued}"
        waiting = bus.transport.retry_waiting()
        if waiting:
            return f"{waiting} message(s) waiting in retry tiers"
        unpublished = bus.store.outbox_waiting()
        if unpublished:
            return f"{unpublished} outbox row(s) not yet published"
        held = [b.route for b in bindings if bus.metrics.flow.oldest_held(b.route) is not None]
        if held:
            return f"deliveries held by a worker on route(s) {', '.join(held)}"
        return None

    def _raise_dead_letter(self) -> None:
        with self._lock:
            first = self.dead[0] if self.dead else None
        if first is not None:
            raise first
        if _letter_count(self.bus) <= self._letters_before:
            return
        # A lane stores the dead letter with its batch's settlement and reports the batch after
        # that commit: a letter a worker of this process wrote may show before its error does.
        if self._reported.wait(LETTER_REPORT_GRACE):
            with self._lock:
                raise self.dead[0]
        letters = self.bus.store.dead_letters(status="new", limit=self._letters_before + 1)
        letter = letters[-1] if letters else {}
        raise DeadLettered(
            f"dead-lettered ({letter.get('reason')}) on route {letter.get('route')!r}, "
            f"step {letter.get('step')!r}: {letter.get('error_type')}: {letter.get('message')}"
            f"\n{letter.get('traceback') or ''}")

    # -- threads -------------------------------------------------------------------------------
    def _on_batch(self, batch: Batch) -> None:
        errors = [item.error for item in batch.items
                  if isinstance(item.fate, DeadLetter) and item.error is not None]
        if errors:
            with self._lock:
                self.dead.extend(errors)
            self._reported.set()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # handed to the test's thread by stop() / join()
                self._errors.append(exc)
                self.stop_event.set()

        thread = threading.Thread(target=body, name=f"bus-test:{name}", daemon=True)
        self._threads.append(thread)
        thread.start()


def _letter_count(bus: Bus) -> int:
    return sum(bus.store.dead_letter_counts().values())


@contextmanager
def bus_running(bus: Bus, *, routes: Sequence[str] | None = None,
                sources: Sequence[str] | None = None, workers: int = 1,
                close: bool = False) -> Iterator[RunningBus]:
    """Run ``bus`` (opened) in threads while the block runs: the sources named (default all),
    the outbox relay, and ``workers`` workers on ``routes`` (default all). On exit stop them
    and re-raise what a thread raised; ``close``: close the bus too."""
    with ExitStack() as stack:
        if close:
            stack.callback(bus.close)
        running_bus = RunningBus(bus, routes=routes, sources=sources, workers=workers)
        stack.callback(running_bus.stop)
        yield running_bus.start()
