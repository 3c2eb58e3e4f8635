"""The ``pos_file`` sink: envelopes → files a POS picks up (price and stock downloads).

One file per envelope. The payload is one record (its fields) or a batch
``{"header": {...}, "records": [{...}, ...], "trailer": {...}}``; a trailer's control totals are
computed from the records. The file is rendered in memory (downloads are small), written under a
temp name (``.NAME.tmp``, which tills ignore), fsynced, renamed into place — a POS never sees half
a file — and optionally followed by a done file. Folder and file name come from templates
(``{store}``, ``{key}``, ``{date}``, ``{record}``, any payload or header value); a value that is
not a plain name (``/``, ``..``, control characters) is refused rather than written elsewhere.

Effects: a delivery is recorded in the cursor store (``sent:<idempotency key>``) after the rename,
and ``lookup`` answers from it, so a delivery left in doubt by a crash is not written twice. The
remaining window — renamed, then the process died before recording — rewrites the same
deterministic name (with ``{key}`` in the template) with the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from datetime import date, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from connectors.pos_file.config import PosFileSinkConfig
from connectors.pos_file.errors import RenderError
from connectors.pos_file.layout_file import load_layout
from connectors.pos_file.parser import Record
from connectors.pos_file.render import render_bytes, with_trailer
from integration_bus.connector import (
    ConfigError,
    ConnectorContext,
    Envelope,
    PermanentError,
    TransientError,
)

__all__ = ["PosFileSink"]

_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


class PosFileSink:
    def __init__(self, config: PosFileSinkConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._config, self._context = config, context
        self._layout = load_layout(context.resolve(config.layout), field="layout")
        if self._layout.spec.batched or self._layout.spec.block_factor is not None:
            raise ConfigError(f"layout {self._layout.spec.name!r} has batches or blocks: the "
                              "sink writes header, details and trailer only", field="layout")
        details = [n for n, r in self._layout.records.items() if r.spec.role == "detail"]
        if config.record is None and len(details) != 1:
            raise ConfigError(f"layout {self._layout.spec.name!r} has several detail records",
                              field="record", hint=f"name one of: {', '.join(details)}")
        self._record = config.record or details[0]
        if self._record not in details:
            raise ConfigError(f"{self._record!r} is not a detail record of the layout",
                              field="record", hint=f"one of: {', '.join(details)}")
        for field, template in (("folder", config.folder), ("file_name", config.file_name)):
            _check_template(field, template)
        if "/" in config.file_name or config.file_name.startswith("."):
            raise ConfigError("a file name template cannot hold '/' or start with '.'",
                              field="file_name")

    # -- delivering -----------------------------------------------------------------------------
    def deliver(self, envelope: Envelope) -> None:
        payload = envelope.payload
        if not isinstance(payload, dict):
            raise PermanentError("the payload must be an object (one record, or a batch with "
                                 "'records')", envelope_id=envelope.id)
        batch = isinstance(payload.get("records"), list)
        rows = payload["records"] if batch else [payload]
        header = self._typed("header", payload.get("header")) if batch else None
        trailer = self._typed("trailer", payload.get("trailer")) if batch else None
        try:
            details = [Record(self._record, self._typed(self._record, row) or {})
                       for row in rows]
            data = render_bytes(self._layout, with_trailer(self._layout, header, details,
                                                           trailer))
        except RenderError as exc:
            raise exc.with_context(envelope_id=envelope.id) from None
        folder, name = self._target(envelope, payload, header)
        try:
            self._write(folder, name, data)
        except OSError as exc:
            raise TransientError(f"cannot write {folder / name}: {exc}",
                                 envelope_id=envelope.id) from exc
        self._context.cursors.set(f"sent:{envelope.idempotency_key}", str(folder / name))

    def lookup(self, envelope: Envelope) -> bool:
        return self._context.cursors.get(f"sent:{envelope.idempotency_key}") is not None

    def close(self) -> None:
        """Nothing is held open between deliveries."""

    # -- helpers --------------------------------------------------------------------------------
    def _typed(self, record: str, values: Any) -> dict[str, Any] | None:
        """JSON values → the Python values the layout's codecs render."""
        codec = self._layout.records.get(record) if record not in ("header", "trailer") else (
            self._layout.header if record == "header" else self._layout.trailer)
        if values is None:
            return None
        if codec is None:
            raise PermanentError(f"the layout {self._layout.spec.name!r} has no {record} record",
                                 field=record)
        if not isinstance(values, dict):
            raise PermanentError(f"{record} must be an object", field=record)
        out: dict[str, Any] = {}
        for name, value in values.items():
            spec = codec.by_name[name].spec if name in codec.by_name else None
            if spec is None:
                continue  # fields the layout does not carry (e.g. from the mapping) are left out
            out[name] = _typed_value(spec.type, value, name)
        return out

    def _target(self, envelope: Envelope, payload: dict[str, Any],
                header: dict[str, Any] | None) -> tuple[Path, str]:
        values: dict[str, Any] = {k: v for k, v in {**(header or {}), **payload}.items()
                                  if isinstance(v, str | int | date) and not isinstance(v, bool)}
        values |= {"key": hashlib.sha256(envelope.idempotency_key.encode()).hexdigest()[:16],
                   "date": envelope.created_at.strftime("%Y%m%d"), "record": self._record}
        folder = self._context.resolve(_fill("folder", self._config.folder, values))
        return folder, _fill("file_name", self._config.file_name, values)

    def _write(self, folder: Path, name: str, data: bytes) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder, name, data, fsync=self._config.fsync)
        if self._config.done_suffix:
            _atomic_write(folder, name + self._config.done_suffix, b"", fsync=self._config.fsync)


def _atomic_write(folder: Path, name: str, data: bytes, *, fsync: bool) -> None:
    temp = folder / f".{name}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, folder / name)
    if fsync:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _check_template(field: str, template: str) -> None:
    try:
        for _, name, spec, conversion in string.Formatter().parse(template):
            if name is not None and (not name.isidentifier() or conversion):
                raise ConfigError(f"template field {{{name}}} must be a plain name",
                                  field=field)
            if spec:
                raise ConfigError(f"template field {{{name}:{spec}}}: formats are not "
                                  "supported", field=field)
    except ValueError as exc:
        raise ConfigError(f"bad template {template!r}: {exc}", field=field) from exc


def _fill(field: str, template: str, values: dict[str, Any]) -> str:
    wanted = [n for _, n, _, _ in string.Formatter().parse(template) if n]
    missing = [n for n in wanted if n not in values]
    if missing:
        raise PermanentError(f"{field} template needs {{{missing[0]}}}, which the payload "
                             "does not have", field=missing[0])
    for name in wanted:
        text = str(values[name])
        if not _PLAIN.match(text) or ".." in text:
            raise PermanentError(f"{name}={text!r} is not a plain name; it cannot be part of "
                                 "a path", field=name)
    return template.format(**{n: str(values[n]) for n in wanted})


def _typed_value(kind: str, value: Any, name: str) -> Any:
    if value is None:
        return None
    try:
        if kind == "text":
            return value if isinstance(value, str) else str(value)
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError
            return int(value)
        if kind == "decimal":
            if isinstance(value, bool | float) or not isinstance(value, int | str):
                raise ValueError  # money never travels as a float
            return Decimal(value)
        if kind == "date":
            return value if isinstance(value, date) else date.fromisoformat(str(value))
        return value if isinstance(value, time) else time.fromisoformat(str(value))
    except (ValueError, InvalidOperation):
        raise PermanentError(f"{name}: {value!r} is not a valid {kind}", field=name) from None
