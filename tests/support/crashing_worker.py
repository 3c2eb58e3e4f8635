"""A worker process whose sink kills the process on a poison message (for delivery-limit tests).

Usage: python -m tests.support.crashing_worker CONFIG_DIR
The ``crasher`` sink appends envelopes to a JSON-lines file (the real jsonl sink) unless the
payload has ``"poison": true``, in which case it SIGKILLs its own process mid-delivery — the way
a segfaulting native library or an OOM kill would end a worker.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from connectors.jsonl import JsonlSink, JsonlSinkConfig
from integration_bus.connector import ConnectorContext, ConnectorPlugin, Envelope
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.settings import load_config


class CrashingSink(JsonlSink):
    def deliver(self, envelope: Envelope) -> None:
        if isinstance(envelope.payload, dict) and envelope.payload.get("poison"):
            os.kill(os.getpid(), signal.SIGKILL)
        super().deliver(envelope)


def _create(config: JsonlSinkConfig, context: ConnectorContext) -> CrashingSink:
    return CrashingSink(config, context)


PLUGIN = ConnectorPlugin(name="crasher", summary="jsonl sink that dies on poison",
                         sink_config=JsonlSinkConfig, create_sink=_create)


def main(config_dir: str) -> None:
    registry = Registry.from_entry_points()
    registry.add(PLUGIN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Bus(load_config(Path(config_dir), registry), registry=registry) as bus:
        bus.worker().run(stop)


if __name__ == "__main__":
    main(sys.argv[1])
