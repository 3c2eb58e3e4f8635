"""A pos_file source in its own process that SIGKILLs itself at a named checkpoint.

Usage: python -m tests.pos_file.crash_child CONFIG_DIR SOURCE POINT NTH
The process dies (SIGKILL, no cleanup, no flush) the NTH time it reaches checkpoint POINT —
exactly what a power cut or OOM kill at that instant leaves behind. Exit code 3 means it never
reached the point (the test then fails).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from connectors.pos_file import PosFileSource
from connectors.pos_file import plugin as pos_plugin
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from tests.support.probe import Target, probe_plugin, registry_with


def main(config_dir: str, source: str, point: str, nth: int) -> int:
    # the config names the probe sink (unused here)
    registry = registry_with(pos_plugin, probe_plugin(Target()))
    reached = 0
    stop = threading.Event()

    def checkpoint(name: str, info: Any) -> None:
        nonlocal reached
        if name == point:
            reached += 1
            if reached == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    with Bus(load_config(Path(config_dir), registry, {}), registry=registry) as bus:
        instance = bus.config.sources[source]
        pos = PosFileSource(instance.config, bus.context(source),  # type: ignore[arg-type]
                            checkpoint=checkpoint)
        publisher = bus.publisher()
        # a deadline: if the point is never reached, give up and say so (exit 3)
        timer = threading.Timer(20.0, stop.set)
        timer.start()
        pos.run(publisher, stop)
        timer.cancel()
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
