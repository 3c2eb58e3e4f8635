"""The source: one envelope per ``*.json`` file dropped into the inbox.

A ``BatchSource``: ``read`` lists the inbox and hands the bus the files' envelopes as one batch;
the bus publishes them with confirms and only then calls the batch's ``ack``, which moves each
confirmed file to ``done/``. A file the broker did not take stays and is read again next
round; one it will never take (no route takes the type, too big to travel) goes to the
dead-letter store (``context.reject``) and to ``rejected/``, as does a file that is not JSON:
never dropped silently. A crash between the confirm and the move publishes a file again
under the same idempotency key (a digest of its content), which the bus's ledger absorbs.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path

from integration_bus.connector import (
    BusError,
    ConnectorContext,
    Envelope,
    PermanentError,
    Publisher,
    SourceBatch,
    check_type,
    run_batch_source,
)

from bus_example_files.config import FilesSourceConfig

WINDOW = 500  # files published in one window of confirms at most


class FilesSource:
    def __init__(self, config: FilesSourceConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._context = context
        self._type = check_type(config.type)  # constructors validate
        self._inbox: Path = context.resolve(config.folder)
        self._interval = config.poll_interval / 1000

    def read(self, stop: threading.Event) -> SourceBatch:
        """Up to ``WINDOW`` files of the inbox as one batch; the ack moves them (see the
        module doc). With nothing there it waits ``poll_interval`` and returns an empty one."""
        found = sorted(self._inbox.glob("*.json"))[:WINDOW]
        if not found:
            stop.wait(self._interval)
        files: list[Path] = []
        envelopes: list[Envelope] = []
        for path in found:
            raw = path.read_bytes()
            try:
                payload = json.loads(raw)
            except ValueError as exc:  # bad input: dead-lettered with where it came from
                self._reject(path, raw, PermanentError(f"not JSON: {exc}", file=path.name))
                continue
            digest = hashlib.sha256(raw).hexdigest()[:24]
            files.append(path)
            envelopes.append(Envelope.create(self._type, payload, source=self.name,
                                             idempotency_key=f"{self.name}:{digest}",
                                             headers={"source_ref": {"file": path.name}}))

        def ack(outcomes: Sequence[BusError | None]) -> None:
            for path, outcome in zip(files, outcomes, strict=True):
                if outcome is None:
                    self._move(path, "done")  # acknowledged only now, after the confirm
                elif isinstance(outcome, PermanentError):  # the broker will never take it
                    self._reject(path, path.read_bytes(), outcome)
                else:  # not taken: leave the file, it is read again next round
                    self._context.log.warning("files.publish_failed", file=path.name,
                                              error=str(outcome))

        return SourceBatch(envelopes, ack)

    def run(self, publisher: Publisher, stop: threading.Event) -> None:
        """For callers that run a source themselves: the bus's read, publish, then ack loop."""
        run_batch_source(self, publisher, stop)

    def _reject(self, path: Path, raw: bytes, error: BusError) -> None:
        self._context.reject(raw, error.with_context(file=path.name), {"file": path.name})
        self._move(path, "rejected")

    def _move(self, path: Path, folder: str) -> None:
        (self._inbox / folder).mkdir(exist_ok=True)
        path.replace(self._inbox / folder / path.name)

    def close(self) -> None:
        """Nothing held open between rounds."""
