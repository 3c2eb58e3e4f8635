"""Did-you-mean hints for unknown names (keys, functions, fields, tables, schemas)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """``"did you mean 'x'?"`` for the closest candidate, or None when nothing is close."""
    options = [str(c) for c in candidates]
    matches = difflib.get_close_matches(name, options, n=2, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in options}
        if name.lower() in lowered:
            matches = [lowered[name.lower()]]
    if not matches:
        return None
    if len(matches) == 1:
        return f"did you mean {matches[0]!r}?"
    return f"did you mean {matches[0]!r} or {matches[1]!r}?"
