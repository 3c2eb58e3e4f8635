"""Rows the runtime writes: journal entries and dead letters; how failures are fingerprinted.

Failure texts are bounded here, once: a partner's 9 MB fault string must not become tens of MB
per failure (message, traceback, attempt history and journal each held a copy). The runtime
clips when it builds rows (:func:`clip_text`, :func:`traceback_text`) and ``row()`` clips again
at twice the limits as the last net for any other writer (twice: a builder may put a short
prefix before a text it clipped). What is cut is said in the text itself.
"""

from __future__ import annotations

import hashlib
import re
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "MAX_LINE_CHARS",
    "MAX_MESSAGE_CHARS",
    "MAX_TRACEBACK_CHARS",
    "DeadLetter",
    "JournalEntry",
    "clip_text",
    "fingerprint",
    "traceback_text",
]

MAX_MESSAGE_CHARS = 8 * 1024  # an error message, an attempt's message, a journal detail value
MAX_TRACEBACK_CHARS = 64 * 1024  # a whole traceback (frames first, the error line last)
MAX_LINE_CHARS = 2 * 1024  # one line of a traceback


def clip_text(text: str, limit: int = MAX_MESSAGE_CHARS, *, keep_tail: bool = False) -> str:
    """``text`` if it has at most ``limit`` characters; else its head (and with ``keep_tail``
    its tail) with a marker saying how much was left out, ``limit`` characters in all."""
    if len(text) <= limit:
        return text
    marker = f" … (truncated, {len(text):,} characters, {{}} left out) … "
    room = max(limit - len(marker) - 12, 0)
    head = room * 2 // 3 if keep_tail else room
    tail = room - head
    return (text[:head] + marker.format(f"{len(text) - head - tail:,}")
            + (text[len(text) - tail:] if tail else ""))


def traceback_text(error: BaseException) -> str:
    """The formatted traceback of ``error`` (with its causes), each line and the whole clipped:
    the frames survive a huge exception message."""
    lines = "".join(traceback.format_exception(error)).splitlines(keepends=True)
    text = "".join(clip_text(line, MAX_LINE_CHARS) for line in lines)
    return clip_text(text, MAX_TRACEBACK_CHARS, keep_tail=True)


_NET = 2  # row() clips at this many times the limits


def _clip_values(value: Any) -> Any:
    """Strings anywhere inside ``value`` clipped (the last net: journal detail, attempts)."""
    if isinstance(value, str):
        return clip_text(value, _NET * MAX_MESSAGE_CHARS)
    if isinstance(value, dict):
        return {k: _clip_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip_values(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One event in an envelope's life (received, delivered, duplicate, retried, dead_lettered,
    published, replayed, filtered)."""

    envelope_id: str
    event: str
    at: datetime
    route: str | None = None
    sink: str | None = None
    attempt: int = 0
    mapping_version: str | None = None
    detail: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        return {"envelope_id": self.envelope_id, "event": self.event, "route": self.route,
                "sink": self.sink, "attempt": self.attempt, "at": self.at,
                "mapping_version": self.mapping_version, "detail": _clip_values(self.detail)}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An envelope that could not be delivered, with everything an operator needs to act."""

    id: str
    envelope: dict[str, Any]
    route: str | None
    reason: str  # error | crashed_worker | delivery_limit | expired | rejected
    error_type: str
    message: str
    failed_at: datetime
    step: str | None = None
    sink: str | None = None
    traceback: str | None = None
    source_ref: Any = None
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def row(self, attempts: list[dict[str, Any]]) -> dict[str, Any]:
        history = [_clip_values(a) for a in attempts + self.attempts]
        first = min((a["at"] for a in history if a.get("at")), default=None)
        message = clip_text(self.message, _NET * MAX_MESSAGE_CHARS)
        return {
            "id": self.id,
            "envelope_id": self.envelope["id"],
            "route": self.route,
            "step": self.step,
            "sink": self.sink,
            "reason": self.reason,
            "error_type": self.error_type,
            "message": message,
            "traceback": clip_text(self.traceback, _NET * MAX_TRACEBACK_CHARS, keep_tail=True)
            if self.traceback is not None else None,
            "fingerprint": fingerprint(self.error_type, message, self.route, self.step),
            "attempts": history,
            "envelope": self.envelope,
            "source_ref": self.source_ref,
            "status": "new",
            "source": self.envelope.get("source"),
            "first_failed_at": datetime.fromisoformat(first) if first else self.failed_at,
            "last_failed_at": self.failed_at,
            "created_at": self.failed_at,
        }


_VARIABLE = [
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b"), "<id>"),  # ULIDs
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f-]{27}\b", re.I), "<id>"),  # UUIDs
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]


def fingerprint(error_type: str, message: str, route: str | None, step: str | None) -> str:
    """Group key for failures: error type + message with the variable parts masked + where."""
    normal = message.splitlines()[0] if message else ""
    for pattern, placeholder in _VARIABLE:
        normal = pattern.sub(placeholder, normal)
    digest = hashlib.sha256("\x1f".join([error_type, normal, route or "", step or ""]).encode())
    return digest.hexdigest()[:16]
