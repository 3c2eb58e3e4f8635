"""A bus worker in its own process (no sources), for the kill test: the test SIGKILLs it while
the ERP holds the answer to a posting it already committed.

Usage: python -m tests.soap_erp.worker_child CONFIG_DIR
Exit code 3: it ran 60 s without being killed (the test then fails).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from tests.soap_erp.support import open_bus


def main(config_dir: str) -> int:
    bus = open_bus(Path(config_dir))
    stop = threading.Event()
    deadline = threading.Timer(60.0, stop.set)
    deadline.daemon = True
    deadline.start()
    bus.run(stop, sources=[])
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
