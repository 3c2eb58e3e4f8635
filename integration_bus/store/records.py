"""Rows the runtime writes: journal entries and dead letters; how failures are fingerprinted;
the clock rows are stamped with (:func:`utcnow`).

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
from datetime import UTC, datetime
from typing import Any

from integration_bus.envelope import dumps

__all__ = [
    "MAX_LINE_CHARS",
    "MAX_MESSAGE_CHARS",
    "MAX_TRACEBACK_CHARS",
    "DeadLetter",
    "JournalEntry",
    "clip_text",
    "fingerprint",
    "normalise",
    "traceback_text",
    "utcnow",
]

MAX_MESSAGE_CHARS = 8 * 1024  # an error message, an attempt's message, a journal detail value
MAX_TRACEBACK_CHARS = 64 * 1024  # a whole traceback (frames first, the error line last)
MAX_LINE_CHARS = 2 * 1024  # one line of a traceback


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: what the store stamps rows with."""
    return datetime.now(UTC)


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
    """Strings anywhere inside ``value`` clipped (the last net: journal detail, attempts).
    A flat object of numbers and short strings, as most journal details are (two per message
    on the hot path), is returned as it is, not copied."""
    if isinstance(value, str):
        return clip_text(value, _NET * MAX_MESSAGE_CHARS)
    if isinstance(value, dict):
        limit = _NET * MAX_MESSAGE_CHARS
        for item in value.values():
            if isinstance(item, str):
                if len(item) > limit:
                    break
            elif item is not None and not isinstance(item, int | float):
                break
        else:
            return value
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
                "mapping_version": self.mapping_version, "detail": self.clipped_detail()}

    def clipped_detail(self) -> dict[str, Any] | None:
        """``detail`` with every string in it clipped (the last net before the database)."""
        return _clip_values(self.detail)  # type: ignore[no-any-return]

    def detail_json(self) -> str:
        """:meth:`clipped_detail` as JSON text (the bus's encoder; ``null`` for none). Two
        rows per message are written so: the detail is encoded once and walked only when its
        text is longer than the clip limit, since no string in a shorter text can be over it
        (0.25 µs a row where the walk and the JSON type's calls took 0.96; docs/benchmarks.md)."""
        text = dumps(self.detail)
        if len(text) > _NET * MAX_MESSAGE_CHARS:
            text = dumps(_clip_values(self.detail))
        return text.decode()


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
    code: str | None = None  # the target's fault code (a SOAP fault's code), when it gave one

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
            "fingerprint": fingerprint(self.error_type, message, self.route, self.step,
                                       code=self.code),
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
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.I), "<url>"),
    (re.compile(r"'[^']*'|\"[^\"]*\"|\u2018[^\u2019]*\u2019|\u201c[^\u201d]*\u201d"), "<str>"),
    (re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b"), "<id>"),  # ULIDs
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f-]{27}\b", re.I), "<id>"),  # UUIDs
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{12,}\b", re.I), "<hex>"),  # digests, hex ids
    # codes of letters and digits (SKU-1042, MAT-001, A7B2, x9): identifiers, not words
    (re.compile(r"(?<![\w<])(?=[\w./:#-]*\d)(?=[\w./:#-]*[A-Za-z])"
                r"[A-Za-z0-9]+(?:[-_./:#][A-Za-z0-9]+)*(?![\w>])"), "<id>"),
    # codes in capitals joined by separators (ABC-XL-RED, TSHIRT_BLUE_M): identifiers too
    (re.compile(r"(?<![\w<])[A-Z]+(?:[-_./][A-Z0-9]+)+(?![\w>])"), "<id>"),
    (re.compile(r"\d+(?:[.,]\d+)*"), "<n>"),
]

#: codes a SOAP fault carries when the target said nothing more specific than whose fault it
#: is: grouping by them alone would put unrelated faults together
_GENERIC_CODES = frozenset({"server", "client", "receiver", "sender"})


def normalise(message: str) -> str:
    """The first line of ``message`` with what varies between one failure and the next
    masked: quoted values, e-mail addresses, URLs, ULIDs/UUIDs, hex digests, numbers and
    identifier-like codes (SKUs, material numbers). ``"Deficit of SKU-1042 (3 PC)"`` and
    ``"Deficit of SKU-77 (1 PC)"`` both become ``"Deficit of <id> (<n> PC)"``."""
    normal = message.splitlines()[0] if message else ""
    for pattern, placeholder in _VARIABLE:
        normal = pattern.sub(placeholder, normal)
    return normal


def fingerprint(error_type: str, message: str, route: str | None, step: str | None, *,
                code: str | None = None) -> str:
    """Group key for failures: where (route, step), the error type, and what went wrong —
    the target's fault ``code`` when it gave a specific one (one ERP fault is one group
    whatever SKU, quantity or document its text names), else the message with its variable
    parts masked (:func:`normalise`)."""
    specific = code is not None and code.strip() != "" and any(
        part.lower() not in _GENERIC_CODES for part in re.split(r"[.:/]", code) if part)
    what = f"code:{code}" if specific else normalise(message)
    digest = hashlib.sha256("\x1f".join([error_type, what, route or "", step or ""]).encode())
    return digest.hexdigest()[:16]
