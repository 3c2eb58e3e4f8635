"""The Envelope: one message on the bus, immutable, with its lineage.

Wire form: the whole envelope as one JSON object (UTF-8), so a message read off any queue or out
of the dead-letter store is self-describing. Decimals are written as strings (money is never a
float on the bus).
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from integration_bus.errors import EnvelopeError, UnpublishableError

__all__ = ["MAX_MESSAGE_BYTES", "Envelope", "dumps", "loads", "new_id"]

#: the default largest envelope published (``broker.max_message``): RabbitMQ 4's default
#: ``max_message_size``; a bigger one is refused by the bus before the broker closes a channel
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# A type is a routing key: dot-separated words, each lower-case letters, digits, '_' or '-'.
_TYPE_RE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
# What the store's columns (and AMQP's 255-byte routing keys) hold; longer is refused up front
# as a typed error instead of failing a database write for a whole batch.
MAX_LENGTHS = {"id": 64, "type": 255, "source": 128, "correlation_id": 128,
               "causation_id": 128, "idempotency_key": 480, "schema": 128, "replay_of": 64}
_FIELDS = (
    "id", "type", "source", "correlation_id", "causation_id", "idempotency_key", "schema",
    "headers", "payload", "created_at", "attempt", "replay_of",
)
_FIELD_SET = frozenset(_FIELDS)
_REQUIRED_TEXT = ("id", "type", "source", "correlation_id", "idempotency_key")
_LIMITS = tuple(MAX_LENGTHS.items())
_ID_MAX, _TYPE_MAX, _SOURCE_MAX = MAX_LENGTHS["id"], MAX_LENGTHS["type"], MAX_LENGTHS["source"]
_CORRELATION_MAX, _CAUSATION_MAX = MAX_LENGTHS["correlation_id"], MAX_LENGTHS["causation_id"]
_KEY_MAX, _SCHEMA_MAX = MAX_LENGTHS["idempotency_key"], MAX_LENGTHS["schema"]
_REPLAY_MAX = MAX_LENGTHS["replay_of"]


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> two characters
_PAIR_SHIFTS = tuple(range(115, 4, -10))  # the 12 two-character groups after the first one
_random = random.Random()  # seeded from os.urandom; reseeded in a forked child (below)
os.register_at_fork(after_in_child=_random.seed)


def new_id(now_ns: int | None = None) -> str:
    """A new envelope id: a ULID (48-bit millisecond time, 80 random bits; sortable by
    creation time; the canonical 26 Crockford base-32 characters).

    Built here rather than by python-ulid's ``ULID()``, which reads 10 bytes of
    ``os.urandom`` (a system call) and builds an object per id: that was 12% of a POS file's
    ingest (docs/benchmarks.md, issue 16). The random part comes from a process-local
    generator seeded from ``os.urandom``; ids name messages, they are not secrets (tokens and
    session keys come from ``secrets``).

    ``now_ns`` (nanoseconds since the epoch, default: now) is the time it carries; an envelope
    passes the instant it takes for ``created_at`` too, so both name the same millisecond."""
    if now_ns is None:
        now_ns = time.time_ns()
    value = (now_ns // 1_000_000) << 80 | _random.getrandbits(80)
    pairs = _PAIRS
    return _CROCKFORD[value >> 125] + "".join(
        [pairs[(value >> shift) & 1023] for shift in _PAIR_SHIFTS]) + _CROCKFORD[value & 31]


def _now() -> tuple[int, datetime]:
    """One reading of the clock: as nanoseconds (for a ULID) and as an aware UTC datetime."""
    now_ns = time.time_ns()
    # whole microseconds as a float are exact to well under half a microsecond (until 2106), so
    # fromtimestamp's rounding gives back those microseconds: the same millisecond as the ULID
    return now_ns, datetime.fromtimestamp(now_ns // 1000 / 1e6, UTC)


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: Any) -> bytes:
    """JSON-encode with Decimals as strings (the one encoder the bus uses)."""
    return orjson.dumps(obj, default=_default)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


_CHECKED_TYPES: set[str] = set()  # types that passed (a handful per bus; bounded below)


def check_type(message_type: str) -> str:
    if type(message_type) is str and message_type in _CHECKED_TYPES:
        return message_type
    # fullmatch: "$" alone would let a trailing newline through
    if not isinstance(message_type, str) or not _TYPE_RE.fullmatch(message_type):
        raise EnvelopeError(
            f"invalid message type {message_type!r}",
            field="type",
            hint="use dot-separated lower-case words, e.g. 'order.created'",
        )
    if len(_CHECKED_TYPES) < 1024:
        _CHECKED_TYPES.add(message_type)
    return message_type


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message. Build new ones with :meth:`create`; make the next one with :meth:`derive`."""

    id: str
    type: str
    source: str
    correlation_id: str
    idempotency_key: str
    payload: Any
    created_at: datetime
    causation_id: str | None = None
    schema: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 0
    replay_of: str | None = None

    @classmethod
    def create(
        cls,
        type: str,
        payload: Any,
        *,
        source: str,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        schema: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Envelope:
        """A fresh envelope entering the bus. Without an idempotency key, the id is used."""
        now_ns, created_at = _now()
        envelope_id = new_id(now_ns)
        values = (envelope_id, check_type(type), source, correlation_id or envelope_id,
                  idempotency_key or envelope_id, payload, created_at, None, schema,
                  dict(headers or {}), 0, None)
        return _assemble(values) if cls is Envelope else cls(*values)

    def derive(
        self,
        type: str | None = None,
        payload: Any = dataclasses.MISSING,
        *,
        source: str | None = None,
        idempotency_key: str | None = None,
        schema: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Envelope:
        """The next envelope in a flow: new id, same correlation, caused by this one.

        The idempotency key is derived deterministically from this one and the new type unless
        given, so re-deriving after a crash yields the same key (and the ledger can dedupe).
        """
        new_type = check_type(type) if type is not None else self.type
        now_ns, created_at = _now()
        return _assemble((
            new_id(now_ns), new_type, source or self.source, self.correlation_id,
            idempotency_key or f"{self.idempotency_key}>{new_type}",
            self.payload if payload is dataclasses.MISSING else payload, created_at, self.id,
            schema if schema is not None else (self.schema if type is None else None),
            dict(self.headers if headers is None else headers), 0, None))

    def next_attempt(self) -> Envelope:
        """The same envelope, one attempt further (used by retries)."""
        return dataclasses.replace(self, attempt=self.attempt + 1)

    def replayed(self) -> Envelope:
        """A copy for replay: new id, same idempotency key (the ledger still guards effects)."""
        return dataclasses.replace(self, id=new_id(), attempt=0, replay_of=self.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "idempotency_key": self.idempotency_key,
            "schema": self.schema,
            "headers": dict(self.headers),
            "payload": self.payload,
            "created_at": self.created_at.isoformat(),
            "attempt": self.attempt,
            "replay_of": self.replay_of,
        }

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    def encode(self, limit: int = MAX_MESSAGE_BYTES) -> bytes:
        """The envelope as it travels (JSON). Raises UnpublishableError, naming why, when it
        cannot: a payload the encoder refuses (nested deeper than 254 levels, a value of an
        unknown type) or JSON bigger than ``limit`` bytes."""
        try:
            body = self.to_json()
        except (TypeError, ValueError, RecursionError) as exc:
            raise UnpublishableError(f"the envelope cannot be encoded: {exc}",
                                     envelope_id=self.id) from None
        if len(body) > limit:
            raise UnpublishableError(f"the envelope is {len(body):,} bytes, over the "
                                     f"{limit:,}-byte message limit", envelope_id=self.id,
                                     size=len(body), limit=limit,
                                     hint="raise broker.max_message (and the broker's "
                                          "max_message_size), or send smaller messages")
        return body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Envelope:
        """Rebuild an envelope; raises EnvelopeError naming the offending field.

        Every delivered message comes through here. An envelope as the bus writes it (a
        dict, every value of its exact type and within its limit, a type seen before) is
        checked in one expression and built by :func:`_assemble`; anything else, valid or
        not, goes through :meth:`_checked`, which names what is wrong. Both accept the same
        envelopes (``tests/test_envelope_decode.py``); the quick one took 2.5 µs where the
        checked one took 4.1 (docs/benchmarks.md)."""
        if type(data) is dict and data.keys() <= _FIELD_SET:
            get = data.get
            ident, kind, source = get("id"), get("type"), get("source")
            correlation, key = get("correlation_id"), get("idempotency_key")
            cause, schema, replay_of = get("causation_id"), get("schema"), get("replay_of")
            attempt, headers, created = get("attempt", 0), get("headers") or {}, get("created_at")
            if (type(ident) is str and 0 < len(ident) <= _ID_MAX
                    and type(kind) is str and kind in _CHECKED_TYPES and len(kind) <= _TYPE_MAX
                    and type(source) is str and 0 < len(source) <= _SOURCE_MAX
                    and type(correlation) is str and 0 < len(correlation) <= _CORRELATION_MAX
                    and type(key) is str and 0 < len(key) <= _KEY_MAX
                    and (cause is None or (type(cause) is str and len(cause) <= _CAUSATION_MAX))
                    and (schema is None or (type(schema) is str and len(schema) <= _SCHEMA_MAX))
                    and (replay_of is None
                         or (type(replay_of) is str and len(replay_of) <= _REPLAY_MAX))
                    and type(attempt) is int and attempt >= 0 and type(headers) is dict
                    and type(created) is str and "payload" in data):
                try:
                    created_at = datetime.fromisoformat(created)
                except ValueError:
                    pass  # named by the checked path
                else:
                    return _assemble((ident, kind, source, correlation, key, data["payload"],
                                      created_at, cause, schema, headers, attempt, replay_of))
        return cls._checked(data)

    @classmethod
    def _checked(cls, data: Mapping[str, Any]) -> Envelope:
        """:meth:`from_dict` field by field, raising EnvelopeError for the first field wrong."""
        if not isinstance(data, Mapping):
            raise EnvelopeError("an envelope must be a JSON object")
        if not _FIELD_SET.issuperset(data):
            unknown = set(data) - _FIELD_SET
            raise EnvelopeError(f"unknown envelope field(s): {', '.join(sorted(unknown))}")
        try:
            get = data.get
            for name in _REQUIRED_TEXT:
                value = get(name)
                if not isinstance(value, str) or not value:
                    raise EnvelopeError(f"missing or empty {name!r}", field=name)
            for name, limit in _LIMITS:
                value = get(name)
                if value is not None and (not isinstance(value, str) or len(value) > limit):
                    raise EnvelopeError(f"{name} must be text of at most {limit} characters",
                                        field=name, envelope_id=str(get("id"))[:64])
            if "payload" not in data:
                raise EnvelopeError("missing 'payload'", field="payload")
            attempt = data.get("attempt", 0)
            if not isinstance(attempt, int) or attempt < 0:
                raise EnvelopeError("attempt must be a non-negative integer", field="attempt")
            headers = data.get("headers") or {}
            if not isinstance(headers, Mapping):
                raise EnvelopeError("headers must be an object", field="headers")
            created = data.get("created_at")
            if not isinstance(created, str):
                raise EnvelopeError("created_at must be an ISO-8601 string", field="created_at")
            return cls(
                id=data["id"],
                type=check_type(data["type"]),
                source=data["source"],
                correlation_id=data["correlation_id"],
                causation_id=data.get("causation_id"),
                idempotency_key=data["idempotency_key"],
                schema=data.get("schema"),
                headers=headers,
                payload=data["payload"],
                created_at=datetime.fromisoformat(created),
                attempt=attempt,
                replay_of=data.get("replay_of"),
            )
        except ValueError as exc:
            raise EnvelopeError(f"invalid envelope: {exc}") from exc

    @classmethod
    def from_json(cls, data: bytes | str) -> Envelope:
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"not JSON: {exc}") from exc
        return cls.from_dict(raw)


_SLOTS = tuple(f.name for f in dataclasses.fields(Envelope))
assert _SLOTS == ("id", "type", "source", "correlation_id", "idempotency_key", "payload",
                  "created_at", "causation_id", "schema", "headers", "attempt", "replay_of")
_SETTERS = tuple(getattr(Envelope, name).__set__ for name in _SLOTS)
_new = object.__new__


def _assemble(values: tuple[Any, ...]) -> Envelope:
    """An Envelope of field values already checked, in declaration order (``_SLOTS``): what
    the frozen dataclass's ``__init__`` does, with each slot's own setter instead of
    ``object.__setattr__`` by name (1.1 µs instead of 1.5; every message is built at least
    twice: decoded, then derived)."""
    envelope = _new(Envelope)
    for set_slot, value in zip(_SETTERS, values, strict=True):
        set_slot(envelope, value)
    return envelope
