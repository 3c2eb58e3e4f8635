"""The source: one envelope per ``*.json`` file dropped into the inbox.

Acknowledging the inbox means moving the file to ``done/`` — only after the bus confirmed the
publish. A file that publishing failed for stays and is tried again next round; a crash
between the confirm and the move publishes it again under the same idempotency key (a digest
of its content), which the bus's ledger absorbs. A file that is not JSON goes to the
dead-letter store (``context.reject``) and to ``rejected/``: never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from integration_bus.connector import (
    ConnectorContext,
    Envelope,
    PermanentError,
    Publisher,
    check_type,
)

from bus_example_files.config import FilesSourceConfig


class FilesSource:
    def __init__(self, config: FilesSourceConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._context = context
        self._type = check_type(config.type)  # constructors validate
        self._inbox: Path = context.resolve(config.folder)
        self._interval = config.poll_interval / 1000

    def run(self, publisher: Publisher, stop: threading.Event) -> None:
        while not stop.is_set():
            for path in sorted(self._inbox.glob("*.json")):
                if stop.is_set():
                    return
                self._take(path, publisher)
            stop.wait(self._interval)

    def _take(self, path: Path, publisher: Publisher) -> None:
        raw = path.read_bytes()
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            self._context.reject(raw, PermanentError(f"not JSON: {exc}", file=path.name),
                                 {"file": path.name})
            self._move(path, "rejected")
            return
        digest = hashlib.sha256(raw).hexdigest()[:24]
        envelope = Envelope.create(self._type, payload, source=self.name,
                                   idempotency_key=f"{self.name}:{digest}",
                                   headers={"source_ref": {"file": path.name}})
        (outcome,) = publisher.publish_many([envelope])
        if outcome is not None:  # not confirmed: leave the file, try again next round
            self._context.log.warning("files.publish_failed", file=path.name,
                                      error=str(outcome))
            return
        self._move(path, "done")  # acknowledged only now, after the confirm

    def _move(self, path: Path, folder: str) -> None:
        (self._inbox / folder).mkdir(exist_ok=True)
        path.replace(self._inbox / folder / path.name)

    def close(self) -> None:
        """Nothing held open between rounds."""
