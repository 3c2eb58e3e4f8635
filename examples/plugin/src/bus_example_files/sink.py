"""The sink: one JSON file per envelope, named by its idempotency key.

Effects happen once: the file name is a digest of the idempotency key, so a redelivery after a
crash writes the same file again (never a second one), and ``lookup`` answers from it. Writes
go to a temporary name and are renamed into place: a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from integration_bus.connector import (
    ConfigError,
    ConnectorContext,
    Envelope,
    PermanentError,
    TransientError,
)

from bus_example_files.config import FilesSinkConfig


def file_name(idempotency_key: str) -> str:
    """The file an idempotency key's effect is written to."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32] + ".json"


class FilesSink:
    def __init__(self, config: FilesSinkConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._folder: Path = context.resolve(config.folder)
        if self._folder.exists() and not self._folder.is_dir():  # fail at start, not later
            raise ConfigError(f"{self._folder} is not a folder", field="folder")

    def deliver(self, envelope: Envelope) -> None:
        if not isinstance(envelope.payload, dict):  # will never fit: dead-letter it now
            raise PermanentError("the payload is not a JSON object", field="payload",
                                 envelope_id=envelope.id)
        body = json.dumps({"idempotency_key": envelope.idempotency_key, "type": envelope.type,
                           "payload": envelope.payload}, sort_keys=True).encode()
        target = self._folder / file_name(envelope.idempotency_key)
        temp = target.with_name(f".{target.name}.tmp")
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(body)
            os.replace(temp, target)
        except OSError as exc:  # a full disk, a share gone away: try again later
            raise TransientError(f"cannot write {target}: {exc}") from exc

    def lookup(self, envelope: Envelope) -> bool:
        """Whether the envelope's file is there already (asked after a crash)."""
        return (self._folder / file_name(envelope.idempotency_key)).is_file()

    def close(self) -> None:
        """Nothing held open between deliveries."""
