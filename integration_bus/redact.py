"""The redaction boundary: secrets are never shown, personal data is masked when shown.

**Secrets** (:class:`Secrets`) are passwords, tokens and keys: the password in a URL's user-info
(``amqp://bus:PASS@...``, ``postgresql+psycopg://...``, ``http://user:PASS@erp/...``), secret
query parameters (``?token=...``), ``Bearer``/``Basic`` credentials in text, and every value the
configuration marks secret — ``SecretStr`` fields, fields named like secrets (``password``,
``api_key``...), and ``${ENV}`` values of variables named like secrets. They are replaced by
``***`` in logs (:func:`log_processor`, :class:`LogFilter`), in what the store writes about a
failure (message, traceback, attempts, journal detail), in metrics labels
(:class:`RedactingRegistry`), in error messages and in everything the CLI shows. Nothing unmasks
a secret.

**Personal data** (``integration_bus.pii``) is masked in what is shown (dead letters, journal,
exports, logs) unless an admin asks for it (``--unmask``, audited); the stored payload stays
real so a replay sends what was received.

The values known to be secret are also kept process-wide (:func:`remember`, :func:`known`):
logging is process-wide, so what it must hide is too. The set only grows.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, SecretBytes, SecretStr

from integration_bus.pii import PersonalData, unecho, unecho_data

__all__ = [
    "MASK",
    "LogFilter",
    "Redaction",
    "Secrets",
    "collect_secrets",
    "known",
    "log_processor",
    "looks_secret",
    "redact_url",
    "remember",
]

MASK = "***"
#: shorter values are not treated as secrets by value (they would mask common words)
MIN_SECRET = 4

_SECRET_WORDS = re.compile(
    r"password|passwd|passphrase|pwd|pass$|secret|token|apikey|accesskey|privatekey|"
    r"credential|signingkey|sessionkey|authkey|sharedkey|masterkey")
_ENV_ONLY = re.compile(r"key$")  # API_KEY, STRIPE_KEY: a config field 'key' names a column
_URL_USERINFO = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/?#@'\"<>]*):(?P<password>[^\s/?#'\"<>]*)@", re.I)
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;][\w.-]*(?:token|secret|password|passwd|pwd|api_?key|access_?key|"
    r"signature|sig|auth|key)=)[^&#\s'\"<>]+", re.I)
# an HTTP Authorization value in text (a header echoed in an error, a logged request)
_CREDENTIALS = re.compile(r"(?P<head>\b(?:[Bb]earer|BEARER|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}")


def looks_secret(name: str, *, env: bool = False) -> bool:
    """Whether a field or (``env=True``) environment variable name says it holds a secret."""
    normal = re.sub(r"[^a-z0-9]", "", name.lower())
    return bool(_SECRET_WORDS.search(normal) or (env and _ENV_ONLY.search(normal)))


def redact_url(url: str) -> str:
    """``url`` with the password of its user-info and secret query values replaced by ``***``
    (for labels, log lines and messages; the real URL is still what is called)."""
    return _scrub_patterns(url)


def _scrub_patterns(text: str) -> str:
    if "://" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: f"{m['head']}{MASK}", text)
    return _CREDENTIALS.sub(lambda m: f"{m['head']}{MASK}", text)


class Secrets:
    """Values never to be shown, plus the patterns of secrets in text. Thread-safe."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        fresh = {v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET}
        with self._lock:
            if fresh <= self._values:
                return
            self._values = self._values | fresh
            ordered = sorted(self._values, key=len, reverse=True)  # longest first
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    @property
    def values(self) -> frozenset[str]:
        return self._values

    def scrub(self, text: str) -> str:
        """``text`` with every known secret value and secret pattern replaced by ``***``."""
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        return _scrub_patterns(text)

    def scrub_data(self, value: Any) -> Any:
        """A copy of JSON-like ``value``: strings scrubbed, values of secret-named keys
        replaced."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {k: (MASK if isinstance(k, str) and looks_secret(k)
                        and isinstance(v, str | int) and not isinstance(v, bool) and v != ""
                        else self.scrub_data(v)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_data(v) for v in value]
        return value


_KNOWN = Secrets()


class Redaction:
    """What one bus hides: secrets always, personal data unless ``unmask`` (admins only, audited,
    enforced by the caller). ``secrets`` default to the process-wide ones."""

    def __init__(self, personal: PersonalData | None = None, *,
                 secrets: Secrets | None = None) -> None:
        self.personal = personal if personal is not None else PersonalData.default()
        self.secrets = secrets if secrets is not None else known()

    def text(self, value: str | None, *, unmask: bool = False,
             echoes: Mapping[str, str] | None = None) -> str | None:
        """Free text: a message, a traceback, an error. ``echoes`` (from :meth:`echoes`):
        values of the message's own payload to mask wherever the text repeats them."""
        if not value:
            return value
        value = self.secrets.scrub(value)
        return value if unmask else unecho(self.personal.text(value), echoes or {})

    def data(self, value: Any, *, unmask: bool = False,
             echoes: Mapping[str, str] | None = None) -> Any:
        """JSON-like data other than a payload (journal detail, attempts, source refs)."""
        value = self.secrets.scrub_data(value)
        return value if unmask else unecho_data(self.personal.data(value), echoes or {})

    def echoes(self, envelope: Mapping[str, Any] | None, *more: Any) -> dict[str, str]:
        """The personal values in an envelope's payload (and in ``more`` payloads, e.g. an
        edit), each with its masked form."""
        found: dict[str, str] = {}
        for payload in ((envelope or {}).get("payload"), *more):
            if payload is not None:
                found.update(self.personal.echoes(payload))
        return found

    def payload(self, value: Any, *, unmask: bool = False) -> Any:
        """A payload: the configured paths too."""
        value = self.secrets.scrub_data(value)
        return value if unmask else self.personal.payload(value)

    def envelope(self, envelope: Mapping[str, Any], *, unmask: bool = False) -> dict[str, Any]:
        """An envelope as stored (payload, or ``raw`` for input rejected at its source)."""
        out = self.data({k: v for k, v in envelope.items() if k not in ("payload", "raw")},
                        unmask=unmask)
        if "payload" in envelope:
            out["payload"] = self.payload(envelope["payload"], unmask=unmask)
        if isinstance(envelope.get("raw"), str):
            raw = self.secrets.scrub(envelope["raw"])
            out["raw"] = raw if unmask else self.personal.raw(raw)
        return dict(out)


def remember(values: Iterable[str]) -> None:
    """Add values to the process-wide secrets (what logging hides)."""
    _KNOWN.add(values)


def known() -> Secrets:
    """The process-wide secrets: every secret of every configuration loaded in this process."""
    return _KNOWN


def collect_secrets(value: Any, name: str = "") -> set[str]:
    """Secret values in a validated config: ``SecretStr`` fields, string fields named like
    secrets, and URL passwords, at any depth of models, lists and mappings."""
    found: set[str] = set()
    if isinstance(value, SecretStr | SecretBytes):
        secret = value.get_secret_value()
        found.add(secret.decode("utf-8", "replace") if isinstance(secret, bytes) else secret)
    elif isinstance(value, str):
        if name and looks_secret(name):
            found.add(value)
        for match in _URL_USERINFO.finditer(value):  # as written, and as a client decodes it
            found |= {match["password"], unquote(match["password"])}
    elif isinstance(value, BaseModel):
        for field in type(value).model_fields:
            found |= collect_secrets(getattr(value, field), field)
        for key, extra in (value.model_extra or {}).items():
            found |= collect_secrets(extra, key)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found |= collect_secrets(item, str(key))
    elif isinstance(value, list | tuple):
        for item in value:
            found |= collect_secrets(item, name)
    return {v for v in found if v}


# -- logging ---------------------------------------------------------------------------------------
_LOG_KEYS_KEPT = frozenset({"timestamp", "level", "logger"})


def log_processor(logger: Any, method: str,
                  event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor (after ``format_exc_info``): secrets out of every value, personal
    data masked in text."""
    personal = PersonalData.default()
    secrets = known()
    for key, value in event_dict.items():
        if key in _LOG_KEYS_KEPT:
            continue
        if isinstance(value, str | Mapping | list | tuple):
            event_dict[key] = personal.data(secrets.scrub_data(value))
        if looks_secret(key) and value not in (None, ""):
            event_dict[key] = MASK
    return event_dict


class LogFilter(logging.Filter):
    """Scrubs standard-library log records (uvicorn, kombu, httpx...) as ``log_processor``
    does structlog events: the message is rendered, scrubbed and frozen."""

    def filter(self, record: logging.LogRecord) -> bool:
        personal, secrets = PersonalData.default(), known()
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        record.msg, record.args = personal.text(secrets.scrub(message)), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = personal.text(secrets.scrub(record.exc_text))
        return True
