"""A worker process whose sink kills the process on a poison message (for crash tests).

Usage: python -m tests.support.crashing_worker CONFIG_DIR [--supervise]
The ``crasher`` sink (tests/support/faults.py) appends envelopes to a JSON-lines file (the real
jsonl sink) unless the payload has ``"poison": true``, in which case it SIGKILLs its own process
mid-delivery — the way a segfaulting native library or an OOM kill would end a worker. The
``tcp`` sink of the same module is registered too. ``--supervise`` runs the worker under the
supervisor loop of ``bus worker --supervise``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from integration_bus.supervisor import supervise
from integration_bus.threads import stop_on_signals
from tests.support.faults import CRASHER, TCP_SINK

PLUGIN = CRASHER


def main(config_dir: str) -> None:
    registry = Registry.from_entry_points()
    registry.add(CRASHER)
    registry.add(TCP_SINK)
    # as `bus worker` does: a handler that calls stop.set() itself deadlocks when a second
    # SIGTERM comes while the first is inside set() (the supervisor sends two; threads.py)
    with stop_on_signals() as stop, \
            Bus(load_config(Path(config_dir), registry), registry=registry) as bus:
        bus.worker().run(stop)


if __name__ == "__main__":
    if "--supervise" in sys.argv[2:]:
        raise SystemExit(supervise([sys.executable, "-m", "tests.support.crashing_worker",
                                    sys.argv[1]]))
    main(sys.argv[1])
