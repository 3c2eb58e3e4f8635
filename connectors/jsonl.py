"""``jsonl``: a JSON-lines file as a source (one envelope or payload per line) or a sink.

Source: reads from a durable cursor (byte offset, line number, inode) a window of lines as a
batch (``BatchSource``); the runtime publishes it with confirms and only then acks, which moves
the cursor, so a restart neither loses nor re-sends confirmed lines (a crash between confirm and
cursor save re-publishes with the same idempotency keys, which the ledger absorbs). A line that
is not JSON, that no route takes or that cannot travel (too big) goes to the dead-letter store
with file:line and the raw text. With ``follow`` it keeps reading appended lines.

Sink: appends each envelope as a line (one ``write`` per line, O_APPEND) and can look up whether a
key is already in the file, so a delivery left in doubt by a crash is not written twice. Several
worker processes may append to one file: a lookup that misses reads what was appended since it
last looked (another process's delivery of the key included).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from integration_bus.connector import (
    BusError,
    ConnectorContext,
    ConnectorPlugin,
    Envelope,
    Millis,
    PermanentError,
    Publisher,
    SourceBatch,
    TransientError,
    run_batch_source,
)

__all__ = ["JsonlSink", "JsonlSinkConfig", "JsonlSource", "JsonlSourceConfig", "plugin"]


class JsonlSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(description="the file to read (relative to the project dir)")
    type: str | None = Field(None, description="message type for payload lines; lines that are "
                                               "whole envelopes carry their own")
    format: Literal["auto", "payload", "envelope"] = "auto"
    follow: bool = Field(False, description="keep reading lines appended to the file")
    window: int = Field(500, ge=1, le=10_000, description="lines published per confirm window")
    poll_interval: Millis = 500

    @model_validator(mode="after")
    def _payload_needs_type(self) -> JsonlSourceConfig:
        # A config problem: `bus lint` and start-up report it (ConfigError, file:line), never
        # a message.
        if self.format == "payload" and not self.type:
            raise ValueError("format 'payload' needs a message type: set 'type'")
        return self


class JsonlSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(description="the file to append to (relative to the project dir)")
    fsync: bool = Field(False, description="fsync after each line (survives power loss)")


class _Line:
    __slots__ = ("end", "number", "text")

    def __init__(self, number: int, text: bytes, end: int) -> None:
        self.number, self.text, self.end = number, text, end


def _nothing_to_ack(outcomes: Sequence[BusError | None]) -> None:
    """The ack of an empty batch."""


class JsonlSource:
    """A ``BatchSource``: windows of lines; the runtime publishes them, then the ack moves
    the cursor."""

    def __init__(self, config: JsonlSourceConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._config = config
        self._context = context
        self._path = context.resolve(config.path)

    def read(self, stop: threading.Event) -> SourceBatch | None:
        """The next window of lines (a ``BatchSource``); None at the end of a file that is
        not followed. The ack dead-letters bad lines and moves the cursor (see :meth:`_ack`)."""
        lines, cursor = self._read_window()
        if not lines:
            if not self._config.follow:
                return None
            stop.wait(self._config.poll_interval / 1000)
            return SourceBatch((), _nothing_to_ack)
        envelopes: list[tuple[_Line, Envelope]] = []
        bad: dict[int, BusError] = {}
        for line in lines:
            if not line.text.strip():
                continue
            try:
                envelopes.append((line, self._envelope(line)))
            except BusError as exc:
                bad[line.number] = exc

        def ack(outcomes: Sequence[BusError | None]) -> None:
            self._ack(lines, cursor, bad, {line.number: outcome for (line, _), outcome
                                           in zip(envelopes, outcomes, strict=True)})

        return SourceBatch([env for _, env in envelopes], ack)

    def run(self, publisher: Publisher, stop: threading.Event) -> None:
        """The ``Source`` contract for callers that run a source themselves: the runtime's
        read, publish, then ack loop."""
        run_batch_source(self, publisher, stop)

    def _cursor(self) -> dict[str, Any]:
        raw = self._context.cursors.get(str(self._path))
        cursor: dict[str, Any] = (orjson.loads(raw) if raw
                                  else {"offset": 0, "line": 0, "inode": None})
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return cursor
        if cursor["inode"] != stat.st_ino or stat.st_size < cursor["offset"]:
            if cursor["inode"] is not None:
                self._context.log.info("jsonl.new_file", path=str(self._path))
            cursor = {"offset": 0, "line": 0, "inode": stat.st_ino}
        return cursor

    def _read_window(self) -> tuple[list[_Line], dict[str, Any]]:
        cursor = self._cursor()
        lines: list[_Line] = []
        try:
            with self._path.open("rb") as handle:
                handle.seek(cursor["offset"])
                number = cursor["line"]
                while len(lines) < self._config.window:
                    text = handle.readline()
                    if not text.endswith(b"\n"):
                        break  # EOF or a line still being written: wait for its newline
                    number += 1
                    lines.append(_Line(number, text, handle.tell()))
        except FileNotFoundError:
            pass
        return lines, cursor

    def _ack(self, lines: list[_Line], cursor: dict[str, Any], bad: dict[int, BusError],
             published: dict[int, BusError | None]) -> None:
        # Bad lines, and lines the broker will never take, are dead-lettered in file order,
        # only up to the first line it did not take: the cursor stops there and the rest is
        # read again, so nothing is dead-lettered twice.
        done_upto = None
        for line in lines:
            error = bad.get(line.number)
            outcome = published.get(line.number)
            if error is not None:
                self._reject(line, error)
            elif isinstance(outcome, PermanentError):  # unroutable, or cannot travel
                self._reject(line, outcome)
            elif outcome is not None:
                self._context.log.warning("jsonl.publish_failed", path=str(self._path),
                                          line=line.number, error=str(outcome))
                break
            done_upto = line
        if done_upto is not None:
            self._context.cursors.set(str(self._path), orjson.dumps({
                "offset": done_upto.end, "line": done_upto.number,
                "inode": cursor["inode"] or self._path.stat().st_ino}).decode())

    def _envelope(self, line: _Line) -> Envelope:
        where = {"file": str(self._path), "line": line.number}
        try:
            data = orjson.loads(line.text)
        except orjson.JSONDecodeError as exc:
            raise PermanentError(f"not JSON: {exc}", **where) from exc
        fmt = self._config.format
        if fmt == "envelope" or (fmt == "auto" and isinstance(data, dict)
                                 and {"id", "type", "payload"} <= data.keys()):
            try:
                return Envelope.from_dict(data)
            except BusError as exc:
                raise exc.with_context(**where) from None
        if not self._config.type:
            raise PermanentError("line is not an envelope and the source has no 'type'", **where)
        digest = hashlib.sha256(line.text).hexdigest()[:20]
        return Envelope.create(
            self._config.type, data, source=self.name,
            idempotency_key=f"{self.name}:{digest}:{line.number}",
            headers={"source_ref": {"file": self._path.name, "line": line.number}})

    def _reject(self, line: _Line, error: BusError) -> None:
        self._context.reject(line.text, error.with_context(file=str(self._path),
                                                           line=line.number),
                             {"file": self._path.name, "line": line.number})

    def close(self) -> None:
        """Nothing held open between windows."""


class JsonlSink:
    def __init__(self, config: JsonlSinkConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._config = config
        self._path = context.resolve(config.path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._keys: set[str] | None = None  # loaded on the first lookup (after a crash)
        self._read_to = 0  # the file's bytes up to here are in _keys

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def deliver(self, envelope: Envelope) -> None:
        line = envelope.to_json() + b"\n"
        try:
            written = os.write(self._open(), line)  # one write per line: a crash leaves no half
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes; disk full?)")
            if self._config.fsync:
                os.fsync(self._open())
        except OSError as exc:
            raise TransientError(f"cannot append to {self._path}: {exc}") from exc
        if self._keys is not None:
            self._keys.add(envelope.idempotency_key)

    def lookup(self, envelope: Envelope) -> bool:
        if self._keys is None:
            self._keys = set()
        if envelope.idempotency_key not in self._keys and self._path.exists():
            self._read_appended(self._keys)
        return envelope.idempotency_key in self._keys

    def _read_appended(self, keys: set[str]) -> None:
        """Add the keys of whole lines appended since the last read (by any process)."""
        with self._path.open("rb") as handle:
            handle.seek(self._read_to)
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # being written: read it next time
                self._read_to += len(raw)
                try:
                    keys.add(orjson.loads(raw)["idempotency_key"])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue  # a line not written by this sink

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


plugin = ConnectorPlugin(
    name="jsonl",
    summary="source: reads envelopes or payloads from a JSON-lines file; "
            "sink: appends envelopes to one",
    source_config=JsonlSourceConfig,
    create_source=JsonlSource,
    sink_config=JsonlSinkConfig,
    create_sink=JsonlSink,
)
