"""Bulk replay vs fresh ingest, on RabbitMQ, in the same run.

    python bench/replay.py [--quick] [--messages N]

Fresh ingest: N envelopes published with confirms and delivered by a worker through a
pass-through route to a JSON-lines sink. Replay: N dead letters of the same shape (other
idempotency keys, so the ledger does not short-cut them) replayed with the dead-letter console
(outbox rows, audit, relay with confirms to the route queue) and delivered by the same worker.
Each is timed from its first step until the worker has delivered all N. The last line is
``RESULT ratio=<replay rate / ingest rate> rate=<replay msgs/s>``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from loadavg import load_line

from integration_bus.deadletters.console import DeadLetterConsole
from integration_bus.envelope import Envelope, new_id
from integration_bus.relay import OutboxRelay
from integration_bus.runtime import Bus
from integration_bus.store import DeadLetter, utcnow
from integration_bus.store.dead_letters import Selection

CONFIG = """
broker: {{url: "{url}", prefetch: 300, batch_size: 100}}
store: {{url: sqlite:///var/bus.db}}
sinks:
  out: {{connector: jsonl, path: var/out.jsonl}}
routes:
  bench: {{from: [bench.order], to: [out]}}
"""


def payload(i: int) -> dict[str, object]:
    return {"order_id": f"W-{i:08d}", "store": "0042", "total": "19.99", "note": "x" * 700}


def wait_delivered(bus: Bus, goal: int) -> None:
    while bus.store.count_events("delivered", route="bench") < goal:
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--messages", type=int)
    args = parser.parse_args()
    count = args.messages or (2000 if args.quick else 10_000)
    print(load_line("start"), flush=True)
    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*",
                    ".*"], check=True)
    root = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    (root / "config").mkdir()
    (root / "config" / "bus.yaml").write_text(
        CONFIG.format(url=f"amqp://guest:guest@127.0.0.1:5672/{vhost}"))
    try:
        with Bus.from_config_dir(root / "config", environ={}) as bus:
            stop = threading.Event()
            worker = threading.Thread(target=bus.worker().run, args=(stop,))
            worker.start()
            # -- fresh ingest --------------------------------------------------------------------
            fresh = [Envelope.create("bench.order", payload(i), source="bench")
                     for i in range(count)]
            started = time.perf_counter()
            publisher = bus.publisher()
            for start in range(0, count, 500):
                assert all(o is None for o in publisher.publish_many(fresh[start:start + 500]))
            publisher.close()
            wait_delivered(bus, count)
            ingest = count / (time.perf_counter() - started)
            # -- replay of as many dead letters ---------------------------------------------------
            now = utcnow()
            bus.store.add_dead_letters([DeadLetter(
                id=new_id(), envelope=Envelope.create("bench.order", payload(i),
                                                      source="bench").to_dict(),
                route="bench", reason="error", error_type="TransientError",
                message="gave up after 5 attempt(s): ERP timed out", failed_at=now)
                for i in range(count)])
            started = time.perf_counter()
            console = DeadLetterConsole(bus, actor="bench")
            outcome = console.replay(Selection(route="bench"))
            relay = OutboxRelay(bus.store, bus.publisher, dead_letter_ids=outcome.queued)
            relay.drain()
            wait_delivered(bus, 2 * count)
            replay = count / (time.perf_counter() - started)
            stop.set()
            worker.join()
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=True)
    print(f"{count} messages: fresh ingest {ingest:,.0f} msg/s; "
          f"bulk replay {replay:,.0f} msg/s (enqueue + relay + delivery)")
    print(load_line("end"))
    print(f"RESULT ratio={replay / ingest:.2f} rate={replay:.0f}")


if __name__ == "__main__":
    main()
