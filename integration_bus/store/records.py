"""Rows the runtime writes: journal entries and dead letters; how failures are fingerprinted."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["DeadLetter", "JournalEntry", "fingerprint"]


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
                "mapping_version": self.mapping_version, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An envelope that could not be delivered, with everything an operator needs to act."""

    id: str
    envelope: dict[str, Any]
    route: str | None
    reason: str  # error | delivery_limit | expired | rejected
    error_type: str
    message: str
    failed_at: datetime
    step: str | None = None
    sink: str | None = None
    traceback: str | None = None
    source_ref: Any = None
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def row(self, attempts: list[dict[str, Any]]) -> dict[str, Any]:
        history = attempts + self.attempts
        first = min((a["at"] for a in history if a.get("at")), default=None)
        return {
            "id": self.id,
            "envelope_id": self.envelope["id"],
            "route": self.route,
            "step": self.step,
            "sink": self.sink,
            "reason": self.reason,
            "error_type": self.error_type,
            "message": self.message,
            "traceback": self.traceback,
            "fingerprint": fingerprint(self.error_type, self.message, self.route, self.step),
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
