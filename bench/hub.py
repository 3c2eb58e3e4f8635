"""Hub throughput: a pass-through route on RabbitMQ whose sink republishes (``bus`` sink), journal
on (SQLite), against a raw pika loop doing the same work on the same broker in the same run:
consume → publish to another queue (confirmed) → ack.

    python bench/hub.py [--quick] [--messages N] [--rounds R] [--url amqp://...]
                        [--tracing off|console]

Both sides get the same 1 KB JSON messages, quorum queues, prefetch and batch of acks allowed by
their design. Our worker runs in a child process so its peak RSS is its own. The last line is
``RESULT ratio=<ours/pika> rate=<ours msgs/s>``.

``--tracing console`` runs the worker with ``OTEL_TRACES_EXPORTER=console``, its spans written to
/dev/null (the cost of tracing itself, not of a terminal); the default is off, as in production
until ``OTEL_TRACES_EXPORTER`` is set.

``--against DIR`` (a checkout of the baseline, e.g. ``git worktree add /tmp/base main``) measures
the cost of tracing instead: each round runs the baseline's worker, ours with tracing off and ours
with console tracing to /dev/null back to back on the same queue, and reports per-round ratios
(off / baseline, on / off) and their medians, so load from other work on the machine hits the
three alike. No pika round then.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

PAYLOAD_BYTES = 1024
PREFETCH = 200


def payload(i: int) -> dict[str, object]:
    filler = "x" * (PAYLOAD_BYTES - 120)
    return {"order_id": f"W-{i:08d}", "store": "0042", "total": "19.99", "note": filler}


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


# -- baseline: raw pika ---------------------------------------------------------------------------
def pika_baseline(url: str, messages: int) -> float:
    import pika

    params = pika.URLParameters(url)
    conn = pika.BlockingConnection(params)
    channel = conn.channel()
    args = {"x-queue-type": "quorum"}
    for name in ("pika.in", "pika.out"):
        channel.queue_declare(name, durable=True, arguments=args)
        channel.queue_purge(name)
    channel.confirm_delivery()
    body = json.dumps(payload(0)).encode()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    for _ in range(messages):
        channel.basic_publish("", "pika.in", body, props, mandatory=True)
    # a separate connection publishes, as RabbitMQ recommends (and as our worker does)
    out_conn = pika.BlockingConnection(params)
    out = out_conn.channel()
    out.confirm_delivery()
    channel.basic_qos(prefetch_count=PREFETCH)
    started = time.perf_counter()
    for done, (method, properties, data) in enumerate(
            channel.consume("pika.in", auto_ack=False), start=1):
        out.basic_publish("", "pika.out", data, properties, mandatory=True)  # waits for confirm
        channel.basic_ack(method.delivery_tag)
        if done == messages:
            break
    elapsed = time.perf_counter() - started
    channel.cancel()
    for name in ("pika.in", "pika.out"):
        channel.queue_delete(name)
    out_conn.close()
    conn.close()
    return messages / elapsed


# -- ours: the bus worker in a child process --------------------------------------------------
CONFIG = """
broker:
  url: "{url}"
  prefetch: {prefetch}
  batch_size: 100
store:
  url: sqlite:///var/bus.db
sinks:
  republish: {{connector: bus, type: bench.out}}
  unused: {{connector: log}}
routes:
  bench:
    from: [bench.in]
    to: [republish]
  drain:
    from: [bench.out]
    to: [unused]
"""


def bus_round(url: str, messages: int, tracing: str = "off",
              code: Path | None = None) -> dict[str, float]:
    from integration_bus.envelope import Envelope
    from integration_bus.runtime import Bus

    root = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    (root / "config").mkdir()
    (root / "config" / "bus.yaml").write_text(CONFIG.format(url=url, prefetch=PREFETCH))
    with Bus.from_config_dir(root / "config", environ={}) as bus:
        drained = bus.transport.queue_stats("bus.route.drain")
        before = drained.messages if drained else 0  # earlier rounds' output stays queued
        publisher = bus.publisher()
        envelopes = [Envelope.create("bench.in", payload(i), source="bench")
                     for i in range(messages)]
        for start in range(0, messages, 1000):
            outcomes = publisher.publish_many(envelopes[start:start + 1000])
            assert all(o is None for o in outcomes), outcomes
        publisher.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if tracing != "off":
        env["OTEL_TRACES_EXPORTER"] = tracing
    script = __file__
    if code is not None:  # the baseline's own worker and bench child
        env["PYTHONPATH"] = str(code)
        script = str(code / "bench" / "hub.py")
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.run([sys.executable, script, "--child", str(root), str(messages)],
                           capture_output=True, text=True, check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    # CPU seconds of the worker process (start-up included): less at the mercy of other load
    # on the machine than its wall-clock rate
    result["cpu_s"] = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    with Bus.from_config_dir(root / "config", environ={}) as bus:
        out = bus.transport.queue_stats("bus.route.drain")
        assert out is not None and out.messages == before + messages, (out, before, messages)
        assert bus.store.count_events("delivered", route="bench") == messages
    return result


def child(root: str, messages: int) -> None:
    """Run the worker for route 'bench' until it handled ``messages``; print timing and RSS."""
    import structlog

    from integration_bus.runtime import Bus

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    result = sys.stdout
    if os.environ.get("OTEL_TRACES_EXPORTER"):  # spans to /dev/null; the result to stdout
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of this process)
    with Bus.from_config_dir(Path(root) / "config", environ={}) as bus:
        stop = threading.Event()
        worker = bus.worker(["bench"])
        thread = threading.Thread(target=worker.run, args=(stop,))
        started = time.perf_counter()
        thread.start()
        while worker.state.handled < messages:
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rate": messages / elapsed, "seconds": elapsed, "rss_mb": rss_mb}),
          file=result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--url", help="an existing vhost URL (default: a fresh vhost)")
    parser.add_argument("--tracing", choices=["off", "console"], default="off",
                        help="OTEL_TRACES_EXPORTER for the worker (console: spans to /dev/null)")
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="compare tracing off/on with the baseline checkout in DIR")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    messages = args.messages or (5000 if args.quick else 30_000)
    rounds = args.rounds or (1 if args.quick else 3)
    vhost = None
    url = args.url
    if url is None:
        vhost = f"bench-{uuid.uuid4().hex[:8]}"
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {messages} x {PAYLOAD_BYTES} B messages, "
          f"{rounds} round(s), prefetch {PREFETCH}, tracing {args.tracing}")
    try:
        if args.against is not None:
            compare_tracing(url, messages, rounds, args.against.resolve())
            return
        ratios, ours_rates, rss = [], [], []
        for round_no in range(1, rounds + 1):
            baseline = pika_baseline(url, messages)
            ours = bus_round(url, messages, args.tracing)
            ratios.append(ours["rate"] / baseline)
            ours_rates.append(ours["rate"])
            rss.append(ours["rss_mb"])
            print(f"round {round_no}: pika {baseline:,.0f} msg/s; bus {ours['rate']:,.0f} msg/s "
                  f"(ratio {ours['rate'] / baseline:.2f}); worker peak RSS "
                  f"{ours['rss_mb']:.0f} MB")
    finally:
        if vhost:
            rabbitmqctl("delete_vhost", vhost)
    print(f"RESULT ratio={statistics.median(ratios):.2f} rate={statistics.median(ours_rates):.0f} "
          f"rss_mb={max(rss):.0f}")


def compare_tracing(url: str, messages: int, rounds: int, baseline: Path) -> None:
    ratios: dict[str, list[float]] = {"off": [], "on": [], "off_cpu": [], "on_cpu": []}
    for round_no in range(1, rounds + 1):
        load = os.getloadavg()
        base = bus_round(url, messages, "off", baseline)
        off = bus_round(url, messages, "off")
        on = bus_round(url, messages, "console")
        ratios["off"].append(off["rate"] / base["rate"])
        ratios["on"].append(on["rate"] / off["rate"])
        ratios["off_cpu"].append(off["cpu_s"] / base["cpu_s"])
        ratios["on_cpu"].append(on["cpu_s"] / off["cpu_s"])
        print(f"round {round_no} (load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}): "
              f"baseline {base['rate']:,.0f} msg/s, {base['cpu_s']:.1f} s CPU; "
              f"tracing off {off['rate']:,.0f} msg/s (x{ratios['off'][-1]:.2f}), "
              f"{off['cpu_s']:.1f} s CPU (x{ratios['off_cpu'][-1]:.2f}); "
              f"console tracing {on['rate']:,.0f} msg/s (x{ratios['on'][-1]:.2f} of off), "
              f"{on['cpu_s']:.1f} s CPU (x{ratios['on_cpu'][-1]:.2f} of off)", flush=True)
    medians = {name: statistics.median(values) for name, values in ratios.items()}
    print(f"RESULT off/baseline rate={medians['off']:.3f} cpu={medians['off_cpu']:.3f}; "
          f"on/off rate={medians['on']:.3f} cpu={medians['on_cpu']:.3f}")


if __name__ == "__main__":
    main()
