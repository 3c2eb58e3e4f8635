"""A source process for the cluster test: publishes N orders until every one is confirmed.

    python -m tests.support.cluster_source CONFIG_DIR COUNT PROGRESS_FILE

Publishes ``cluster.order`` envelopes keyed ``order-00000`` ... in windows of 200 through the
bus's publisher (broker URL list from the config: it fails over like any client). What is not
confirmed (the node died under it) is published again after a pause, as a source whose system
was not acknowledged would; duplicates that reach the bus are the ledger's job. The number of
confirmed orders is written to PROGRESS_FILE after each window; exit 0 once all are confirmed.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from integration_bus.envelope import Envelope
from integration_bus.runtime import Bus

WINDOW = 200


def main(config_dir: str, count: int, progress: str) -> None:
    with Bus.from_config_dir(Path(config_dir), migrate=False) as bus:
        publisher = bus.publisher()
        pending = [Envelope.create("cluster.order", {"order": i, "total": "19.99"},
                                   source="cluster-source", idempotency_key=f"order-{i:05d}")
                   for i in range(count)]
        confirmed = 0
        pause = threading.Event()
        while pending:
            window, pending = pending[:WINDOW], pending[WINDOW:]
            outcomes = publisher.publish_many(window)
            failed = [e for e, o in zip(window, outcomes, strict=True) if o is not None]
            confirmed += len(window) - len(failed)
            Path(progress).write_text(str(confirmed))
            if failed:
                print(f"{time.strftime('%H:%M:%S')} {len(failed)} unconfirmed: "
                      f"{next(o for o in outcomes if o is not None)}", file=sys.stderr,
                      flush=True)
                pending = failed + pending
                pause.wait(0.5)
        publisher.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
