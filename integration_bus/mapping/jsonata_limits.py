"""Bounds that hold inside JSONata's builtins, where jsonata-python's own time box never looks.

jsonata-python checks ``timeout_ms`` only as its evaluator enters and leaves expression nodes;
a builtin runs unchecked. Found by a hostile partner: ``$match`` with a backtracking regex ran
9.7 s under a 100 ms limit, ``$pad`` and ``$replace`` built gigabytes from small data, and
``$eval`` let data bring an expression of its own. Four layers close that:

1. **A watchdog that really interrupts.** When a document's time is up, :class:`Interrupted` is
   raised *in the evaluating thread* (CPython's ``PyThreadState_SetAsyncExc``). It lands at the
   next bytecode boundary, so it stops every loop written in Python (the library's builtins
   are Python: ``$distinct`` is quadratic, ``$replace`` copies the rest of the string per
   match), and being a BaseException no builtin's ``except Exception`` swallows it. A
   subprocess per document would cost milliseconds; a thread cannot be killed otherwise.
2. **Regular expressions** run on the ``regex`` module with the time left as its ``timeout``,
   which the C matcher itself checks: catastrophic backtracking stops there, where (1) cannot
   reach. A call yields at most :data:`MAX_MATCHES` matches; ``sub`` builds its result match by
   match and stops at :data:`MAX_STRING`.
3. **Builders** whose single C call could allocate gigabytes are checked before they run:
   ``$pad`` (width), ``$join`` (total length), ``$split`` (pieces), ``$replace`` with a text
   pattern (count x replacement length). Every builtin's result is checked afterwards too.
4. **$eval is refused**: at load when the expression names it, and at run time however a
   function value reaches it.

Limits raise :class:`Refused` (a BaseException, for the same reason as (1)); the step turns
both into MappingError naming the limit.
"""

from __future__ import annotations

import contextvars
import ctypes
import heapq
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import regex
from jsonata import Jsonata  # type: ignore[import-untyped]
from jsonata.jexception import JException  # type: ignore[import-untyped]
from jsonata.regex_engine import RegexFlags  # type: ignore[import-untyped]

__all__ = ["MAX_ITEMS", "MAX_MATCHES", "MAX_STRING", "Interrupted", "Refused", "Watchdog",
           "bound_builtins", "names_eval", "timed_regex"]

MAX_STRING = 4 * 1024 * 1024  # characters of one string a builtin may build
MAX_ITEMS = 1_000_000  # items of one list a builtin may return
MAX_MATCHES = 100_000  # matches of one regex call (each becomes an object)
_NO_RUN_TIMEOUT = 1.0  # seconds for a regex used outside a guarded evaluation
_IDLE_EXIT = 60.0  # seconds without evaluations after which the watchdog thread ends


class Interrupted(BaseException):
    """Raised in the evaluating thread by the watchdog when the document's time is up."""


class Refused(BaseException):
    """A builtin would exceed a limit (or is not allowed); ``str()`` says which."""


# -- the watchdog -------------------------------------------------------------------------------

@dataclass(order=True)
class _Run:
    deadline: float
    seq: int
    thread_id: int = field(compare=False)
    fired: bool = field(default=False, compare=False)
    done: bool = field(default=False, compare=False)

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()


_CURRENT: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("jsonata_run",
                                                                      default=None)


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Set (or with None, clear) the exception pending in ``thread_id``."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None)


class Watchdog:
    """Interrupts guarded evaluations that pass their deadline. One daemon thread, started on
    first use, sleeping until the earliest deadline, ending after a minute without work (the
    next guard starts it again). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[_Run] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, timeout_ms: int) -> Iterator[None]:
        """Run the body with a deadline; past it, Interrupted is raised in this thread."""
        run = _Run(time.monotonic() + timeout_ms / 1000, next(self._seq), threading.get_ident())
        token = _CURRENT.set(run)
        with self._lock:
            heapq.heappush(self._heap, run)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="jsonata-watchdog",
                                                daemon=True)
                self._thread.start()
            self._lock.notify()
        try:
            yield
        finally:
            with self._lock:  # from here on the watchdog leaves this thread alone
                run.done = True
                if run.fired:
                    _raise_in(run.thread_id, None)  # fired but not yet raised: withdraw it
            _CURRENT.reset(token)

    def _watch(self) -> None:
        with self._lock:
            while True:
                while self._heap and self._heap[0].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    if not self._lock.wait(_IDLE_EXIT) and not self._heap:
                        self._thread = None  # idle: a reloaded mapping leaves no thread behind
                        return
                    continue
                first = self._heap[0]
                left = first.seconds_left()
                if left > 0:
                    self._lock.wait(left)
                    continue
                heapq.heappop(self._heap)
                first.fired = True
                _raise_in(first.thread_id, Interrupted)


def _seconds_left() -> float:
    run = _CURRENT.get()
    if run is None:
        return _NO_RUN_TIMEOUT
    left = run.seconds_left()
    if left <= 0:
        raise JException("D1012", -1)
    return left


# -- regular expressions ------------------------------------------------------------------------

class TimedPattern:
    """A compiled ``regex`` pattern whose every call is bounded in time (the evaluation's time
    left) and in output. Offers what jsonata-python calls on a pattern."""

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        self.pattern: str = compiled.pattern
        self.groups: int = compiled.groups

    def search(self, string: str) -> Any:
        return self._timed(lambda t: self._compiled.search(string, timeout=t))

    def finditer(self, string: str) -> Iterator[Any]:
        matches = self._timed(lambda t: self._compiled.finditer(string, timeout=t))
        for count, match in enumerate(self._drain(matches), start=1):
            if count > MAX_MATCHES:
                raise Refused(f"a regular expression matched more than {MAX_MATCHES:,} times")
            yield match

    def split(self, string: str, maxsplit: int = 0) -> list[str]:
        cap = MAX_ITEMS if maxsplit <= 0 else min(maxsplit, MAX_ITEMS)
        pieces: list[str] = self._timed(
            lambda t: self._compiled.split(string, maxsplit=cap, timeout=t))
        if len(pieces) > MAX_ITEMS:
            raise Refused(f"$split would return more than {MAX_ITEMS:,} pieces")
        return pieces

    def sub(self, repl: str | Callable[[Any], str], string: str, count: int = 0) -> str:
        """Like ``re.sub``, built match by match and refused past MAX_STRING characters."""
        if isinstance(repl, str):
            _check_group_references(repl, self.groups)
        parts: list[str] = []
        size = position = 0
        for done, match in enumerate(self.finditer(string), start=1):
            piece = repl(match) if callable(repl) else match.expand(repl)
            if not isinstance(piece, str):
                raise JException("D3012", -1)
            parts += (string[position:match.start()], piece)
            size += match.start() - position + len(piece)
            position = match.end()
            if size + len(string) - position > MAX_STRING:
                raise Refused(f"$replace would build more than {MAX_STRING:,} characters")
            if count and done >= count:
                break
        parts.append(string[position:])
        return "".join(parts)

    def _timed(self, call: Callable[[float], Any]) -> Any:
        try:
            return call(_seconds_left())
        except TimeoutError:
            raise JException("D1012", -1) from None

    @staticmethod
    def _drain(matches: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from matches
        except TimeoutError:
            raise JException("D1012", -1) from None


_GROUP_REF = re.compile(r"\\g<(\d+)>|\\(\d+)")


def _check_group_references(template: str, groups: int) -> None:
    """Refuse a reference to a group the pattern lacks, worded as ``re`` words it (the
    library catches that wording to retry without the missing group)."""
    for found in _GROUP_REF.finditer(template):
        number = int(found.group(1) or found.group(2))
        if number > groups:
            raise re.error(f"invalid group reference {number} at position {found.start() + 1}")


def timed_regex(pattern: str, flags: RegexFlags) -> TimedPattern:
    """The regex engine handed to jsonata-python: compiles regex literals at load."""
    options = regex.V0
    if flags.case_insensitive:
        options |= regex.IGNORECASE
    if flags.multiline:
        options |= regex.MULTILINE
    return TimedPattern(regex.compile(pattern, options))


# -- builtins -----------------------------------------------------------------------------------

def _pad(args: list[Any]) -> None:
    width = args[1] if len(args) > 1 else None
    if isinstance(width, int | float) and abs(width) > MAX_STRING:
        raise Refused(f"$pad to {width:,.0f} characters is over the limit of {MAX_STRING:,}")


def _join(args: list[Any]) -> None:
    items = args[0] if args else None
    if isinstance(items, list):
        separator = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        total = sum(len(s) for s in items if isinstance(s, str)) + \
            len(separator) * max(len(items) - 1, 0)
        if total > MAX_STRING:
            raise Refused(f"$join would build {total:,} characters; the limit is {MAX_STRING:,}")


def _split(args: list[Any]) -> None:
    string, separator = [*args, None, None][:2]
    if isinstance(string, str) and isinstance(separator, str):
        pieces = len(string) if separator == "" else string.count(separator) + 1
        if pieces > MAX_ITEMS:
            raise Refused(f"$split would return {pieces:,} pieces; the limit is {MAX_ITEMS:,}")


def _replace(args: list[Any]) -> None:
    """A text pattern is replaced by the library in one join: bound its size before."""
    string, pattern, replacement, limit = [*args, None, None, None, None][:4]
    if not (isinstance(string, str) and isinstance(pattern, str) and pattern
            and isinstance(replacement, str)):
        return  # regex patterns are bounded by TimedPattern.sub
    count = string.count(pattern)
    if isinstance(limit, int | float) and limit >= 0:
        count = min(count, int(limit))
    longest = len(replacement) + replacement.count("$") * len(pattern)  # $0 is the match
    total = len(string) + count * max(longest - len(pattern), 0)
    if total > MAX_STRING:
        raise Refused(f"$replace would build up to {total:,} characters; the limit is "
                      f"{MAX_STRING:,}")


def _refuse_eval(args: list[Any]) -> None:
    raise Refused("$eval is not allowed: it would run an expression taken from the data")


_BEFORE: dict[str, Callable[[list[Any]], None]] = {
    "pad": _pad, "join": _join, "split": _split, "replace": _replace, "eval": _refuse_eval}


class _Bounded(Jsonata.JFunction):  # type: ignore[misc]
    """A library builtin behind checks: before (arguments) and after (result size)."""

    def __init__(self, name: str, inner: Any) -> None:
        super().__init__(None, None)
        self.function_name = name
        self.signature = inner.signature
        self._inner = inner
        self._before = _BEFORE.get(name)

    def call(self, input: Any, args: Any) -> Any:
        if self._before is not None:
            self._before(list(args or []))
        result = self._inner.call(input, args)  # the watchdog bounds its time
        if isinstance(result, str) and len(result) > MAX_STRING:
            raise Refused(f"${self.function_name} built {len(result):,} characters; the limit "
                          f"is {MAX_STRING:,}")
        if isinstance(result, list) and len(result) > MAX_ITEMS:
            raise Refused(f"${self.function_name} returned {len(result):,} items; the limit is "
                          f"{MAX_ITEMS:,}")
        return result

    def get_number_of_args(self) -> int:
        return int(self._inner.get_number_of_args())


def bound_builtins(program: Any) -> None:
    """Shadow every builtin in ``program``'s environment with its bounded form."""
    for name, builtin in list(Jsonata.static_frame.bindings.items()):
        if isinstance(builtin, Jsonata.JFunction):
            program.register_function(name, _Bounded(name, builtin))


def names_eval(program: Any) -> bool:
    """True when the parsed expression refers to ``$eval`` anywhere."""
    seen: set[int] = set()
    stack = [program.ast]
    while stack:
        node = stack.pop()
        if id(node) in seen or node is None:
            continue
        seen.add(id(node))
        if getattr(node, "type", None) == "variable" and getattr(node, "value", None) == "eval":
            return True
        for value in vars(node).values() if hasattr(node, "__dict__") else ():
            if isinstance(value, list):
                stack += [v for v in value if hasattr(v, "__dict__") and hasattr(v, "type")]
            elif hasattr(value, "__dict__") and hasattr(value, "type"):
                stack.append(value)
    return False
