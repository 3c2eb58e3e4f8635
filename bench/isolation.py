"""Bulkhead isolation: a healthy route's rate while another route's sink hangs, over its rate alone.

    python bench/isolation.py [--quick] [--messages N] [--rounds R] [--url amqp://...]

Two routes in one worker on RabbitMQ, journal on (SQLite): ``healthy`` republishes to the bus
(``bus`` sink, as in bench/hub.py); ``stuck`` delivers over TCP to a server that accepts and
never answers (tests/support/faults.py), with a 2 s sink deadline. Each round measures the
healthy route alone, then with the stuck route hanging (its messages published first, its
sink call under way), in the same worker, after an uncounted warm-up. The last line is
``RESULT ratio=<healthy rate while stuck hangs / healthy rate alone> alone=<msg/s> during=<msg/s>``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from loadavg import load_line
from vhost import fresh_vhost

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONFIG = """
broker: {{url: "{url}", prefetch: 200, batch_size: 100}}
store: {{url: sqlite:///var/bus.db}}
sinks:
  republish: {{connector: bus, type: bench.out}}
  erp: {{connector: tcp, port: {port}, timeout: 600}}
  unused: {{connector: log}}
routes:
  healthy: {{from: [bench.in], to: [republish]}}
  stuck: {{from: [stuck.in], to: [erp], deadline: 2s}}
  drain: {{from: [bench.out], to: [unused]}}
"""



def payload(i: int) -> dict[str, object]:
    return {"order_id": f"W-{i:08d}", "store": "0042", "total": "19.99", "note": "x" * 900}


def measure(url: str, messages: int, rounds: int) -> list[tuple[float, float]]:
    import structlog

    from integration_bus.envelope import Envelope
    from integration_bus.runtime import Bus
    from tests.support.faults import TCP_SINK, Blackhole
    from tests.support.probe import registry_with

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    results = []
    with Blackhole() as hole:
        root = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
        (root / "config").mkdir()
        (root / "config" / "bus.yaml").write_text(CONFIG.format(url=url, port=hole.port))
        registry = registry_with(TCP_SINK)
        with Bus.from_config_dir(root / "config", environ={}, registry=registry) as bus:
            healthy = [0]
            lock = threading.Lock()

            def on_batch(batch: object) -> None:
                count = sum(1 for item in batch.items  # type: ignore[attr-defined]
                            if item.route.name == "healthy")
                with lock:
                    healthy[0] += count

            publisher = bus.publisher()
            # the healthy route only: the stuck route's lane runs, idle, in the same worker
            worker = bus.worker(["healthy", "stuck"], on_batch=on_batch)
            stop = threading.Event()
            thread = threading.Thread(target=worker.run, args=(stop,))
            thread.start()
            try:
                # warm-up, not counted: connections, the cautious start (prefetch 1 until a
                # fresh message), SQLite pages
                _timed(publisher, healthy, lock, min(messages, 1000), Envelope)
                for _round in range(rounds):
                    alone = _timed(publisher, healthy, lock, messages, Envelope)
                    stuck = [Envelope.create("stuck.in", payload(i), source="bench")
                             for i in range(500)]
                    assert all(o is None for o in publisher.publish_many(stuck))
                    wait = time.monotonic() + 30
                    while not hole.received and time.monotonic() < wait:
                        time.sleep(0.01)
                    assert hole.received, "the stuck route never called its sink"
                    during = _timed(publisher, healthy, lock, messages, Envelope)
                    results.append((alone, during))
                    print(f"round {_round + 1}: healthy alone {alone:,.0f} msg/s; while the "
                          f"other route hangs {during:,.0f} msg/s (ratio {during / alone:.2f})",
                          flush=True)
                    hole.heal()  # let the stuck route drain before the next round
                    hole.healed.clear()
                    hole.received.clear()
            finally:
                stop.set()
                hole.heal()
                thread.join()
                publisher.close()
    return results


def _timed(publisher: object, healthy: list[int], lock: threading.Lock, messages: int,
           envelope_cls: type) -> float:
    envelopes = [envelope_cls.create("bench.in", payload(i), source="bench")  # type: ignore[attr-defined]
                 for i in range(messages)]
    with lock:
        goal = healthy[0] + messages
    started = time.perf_counter()
    for start in range(0, messages, 1000):
        outcomes = publisher.publish_many(envelopes[start:start + 1000])  # type: ignore[attr-defined]
        assert all(o is None for o in outcomes), outcomes
    while True:
        with lock:
            if healthy[0] >= goal:
                break
        time.sleep(0.005)
    return messages / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--url", help="an existing vhost URL (default: a fresh vhost)")
    args = parser.parse_args()
    messages = args.messages or (3000 if args.quick else 20_000)
    rounds = args.rounds or (1 if args.quick else 3)
    print(load_line("start"), flush=True)
    url, drop_vhost = fresh_vhost(args.url)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}; {messages} "
          f"messages per phase, {rounds} round(s)")
    try:
        results = measure(url, messages, rounds)
    finally:
        drop_vhost()
    ratio = statistics.median(d / a for a, d in results)
    print(load_line("end"))
    print(f"RESULT ratio={ratio:.2f} alone={statistics.median(a for a, _ in results):.0f} "
          f"during={statistics.median(d for _, d in results):.0f}")


if __name__ == "__main__":
    main()
