"""Did-you-mean hints for unknown names (keys, plugins, sinks, functions, fields, tables).

The one implementation the bus and its plugins use: :func:`closest` when the caller has its
own fallback (``closest(...) or "steps: ..."``), :func:`did_you_mean` when the hint should
list the choices when nothing is close.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "did_you_mean"]

_CUTOFF = 0.6


def closest(word: str, choices: Iterable[str]) -> str | None:
    """``"did you mean 'x'?"`` (``'x' or 'y'`` when two are exactly as close) for the nearest
    choices, else the choice that differs only in case, else None."""
    options = [str(choice) for choice in choices]
    matches = difflib.get_close_matches(word, options, n=2, cutoff=_CUTOFF)
    if not matches:
        by_case = {option.lower(): option for option in options}
        if word.lower() in by_case:
            matches = [by_case[word.lower()]]
    if not matches:
        return None
    if len(matches) == 1 or _likeness(word, matches[1]) < _likeness(word, matches[0]):
        return f"did you mean {matches[0]!r}?"
    first, second = sorted(matches)  # a tie: in a stable order
    return f"did you mean {first!r} or {second!r}?"


def _likeness(word: str, choice: str) -> float:
    return difflib.SequenceMatcher(None, word, choice).ratio()


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A hint for an unknown name: :func:`closest`, or the sorted list of choices
    (``one of: a, b``), or ``none are defined``."""
    options = sorted(str(choice) for choice in choices)
    near = closest(word, options)
    if near is not None:
        return near
    return f"one of: {', '.join(options)}" if options else "none are defined"
