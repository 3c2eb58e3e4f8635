"""Hub throughput: a pass-through route on RabbitMQ whose sink republishes (``bus`` sink), journal
on (SQLite, or PostgreSQL with ``--store postgresql``), against a raw pika hop doing the same
work on the same broker in the same run: consume → publish to another queue (confirmed) → ack.

    python bench/hub.py [--quick] [--messages N] [--rounds R] [--url amqp://...]
                        [--tracing off|console] [--store sqlite|postgresql] [--processes N]

Both sides get the same 1 KB JSON messages, quorum queues and prefetch. The baseline is the pika
hop a fast consumer would be written as: pika's SelectConnection consumes, republishes on a
second connection with publisher confirms, up to the bus's ``confirm_window`` (512) unconfirmed,
and acks each original only once its republish is confirmed (``basic.ack(multiple)`` up to the
last delivery whose republish and all earlier ones are confirmed). A second pika loop that waits
for the confirm of every publish before acking (BlockingConnection, on a sample of at most
5,000 messages) is printed as an extra line, not used in the ratio. Our worker runs in a child
process so its peak RSS is its own; its clock starts when it is consuming (as pika's starts at
``basic.consume``; its start-up before that is printed, not timed) and stops when the lane has
settled the last batch (the worker's ``on_batch``; the batch's ack, one frame, is not timed),
and its CPU share of that time is printed too. The load average is printed at the start and
the end; the last line is ``RESULT ratio=<ours / pika windowed hop> rate=<ours msg/s>
rss_mb=<our worker's peak RSS>``.

``--store postgresql`` starts a private PostgreSQL server (``tests/support/services.py``, on a
free port, deleted afterwards) and gives each run a database of its own.

``--tracing console`` runs the worker with ``OTEL_TRACES_EXPORTER=console``, its spans written to
/dev/null (the cost of tracing itself, not of a terminal); the default is off, as in production
until ``OTEL_TRACES_EXPORTER`` is set.

``--processes N`` adds a scaling row: the same route worked by 1 and by N worker processes (as
``bus worker --processes N`` runs them), each side timed from the moment every process is
consuming until the last message has been republished, so start-up is not counted; printed as
``scaling: 1 process … msg/s; N processes … msg/s (xF)`` before the RESULT line.

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
from pathlib import Path
from typing import Any

from loadavg import load_line
from vhost import fresh_vhost

PAYLOAD_BYTES = 1024
PREFETCH = 200  # the bus's default broker.prefetch
BATCH = 100  # the bus's default broker.batch_size
WINDOW = 512  # the bus's default broker.confirm_window: unconfirmed republishes in flight
CONFIRM_EACH_SAMPLE = 5_000  # messages for the confirm-each loop (about 1 ms per message)


def payload(i: int) -> dict[str, object]:
    filler = "x" * (PAYLOAD_BYTES - 120)
    return {"order_id": f"W-{i:08d}", "store": "0042", "total": "19.99", "note": filler}



# -- baseline: raw pika ---------------------------------------------------------------------------
def pika_fill(url: str, messages: int) -> None:
    """Declare pika.in and pika.out (quorum), empty both, and put ``messages`` copies of the
    payload into pika.in (persistent; waits until the queue holds them all)."""
    import pika  # type: ignore[import-untyped]

    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    for name in ("pika.in", "pika.out"):
        channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_purge(name)
    body = json.dumps(payload(0)).encode()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    for _ in range(messages):
        channel.basic_publish("", "pika.in", body, props)
    deadline = time.monotonic() + 120
    while pika_count(channel, "pika.in") < messages:
        if time.monotonic() > deadline:
            raise SystemExit(f"pika.in holds {pika_count(channel, 'pika.in')} of {messages}")
        conn.sleep(0.05)
    conn.close()


def pika_count(channel: Any, name: str) -> int:
    """Messages ready in the queue ``name`` (passive declare on a BlockingChannel)."""
    return int(channel.queue_declare(name, passive=True).method.message_count)


def pika_check_and_delete(url: str, messages: int) -> None:
    """Every message moved: pika.in empty, pika.out holding ``messages``; then delete both."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    counts = (pika_count(channel, "pika.in"), pika_count(channel, "pika.out"))
    assert counts == (0, messages), f"pika.in/pika.out hold {counts}, expected (0, {messages})"
    for name in ("pika.in", "pika.out"):
        channel.queue_delete(name)
    conn.close()


def pika_windowed(url: str, messages: int) -> float:
    """The baseline hop: consume pika.in, republish to pika.out on a second connection with up
    to WINDOW unconfirmed, ack each original once its republish (and every earlier one) is
    confirmed. Returns messages per second, from basic.consume to the last ack."""
    import collections

    import pika

    pika_fill(url, messages)
    params = pika.URLParameters(url)
    waiting: collections.deque[tuple[int, Any, bytes]] = collections.deque()
    # in publish order: [publish sequence number, delivery tag of the original, confirmed?]
    in_flight: collections.deque[list[int]] = collections.deque()
    by_seq: dict[int, list[int]] = {}
    state = {"published": 0, "acked": 0, "failed": 0, "closed": 0,
             "started": 0.0, "elapsed": 0.0}
    channels: dict[str, pika.channel.Channel] = {}
    conns: list[pika.SelectConnection] = []
    errors: list[object] = []

    def pump() -> None:
        out = channels["out"]
        while waiting and len(in_flight) < WINDOW:
            tag, props, body = waiting.popleft()
            out.basic_publish("", "pika.out", body, props, mandatory=True)
            state["published"] += 1
            entry = [state["published"], tag, 0]
            in_flight.append(entry)
            by_seq[entry[0]] = entry

    def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
        waiting.append((method.delivery_tag, props, body))
        pump()

    def on_confirm(frame: pika.frame.Method) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            state["failed"] += 1
        if method.multiple:
            for entry in in_flight:
                if entry[0] > method.delivery_tag:
                    break
                entry[2] = 1
        elif method.delivery_tag in by_seq:
            by_seq[method.delivery_tag][2] = 1
        last = None
        while in_flight and in_flight[0][2]:
            entry = in_flight.popleft()
            del by_seq[entry[0]]
            last = entry[1]
            state["acked"] += 1
        if last is not None:
            channels["in"].basic_ack(last, multiple=True)
        if state["acked"] >= messages:
            state["elapsed"] = time.perf_counter() - state["started"]
            for conn in conns:
                conn.close()
            return
        pump()

    def on_closed(conn: pika.SelectConnection, reason: object) -> None:
        state["closed"] += 1
        if state["acked"] < messages:
            errors.append(reason)
        if state["closed"] == len(conns) or errors:
            conn.ioloop.stop()

    def on_open_error(conn: pika.SelectConnection, error: object) -> None:
        errors.append(error)
        conn.ioloop.stop()

    def on_out_channel(channel: pika.channel.Channel) -> None:
        channels["out"] = channel
        channel.add_on_return_callback(lambda *_: state.__setitem__("failed",
                                                                     state["failed"] + 1))
        channel.confirm_delivery(on_confirm, callback=lambda _: conns[0].channel(
            on_open_callback=on_in_channel))

    def on_in_channel(channel: pika.channel.Channel) -> None:
        channels["in"] = channel

        def consume(_frame: object) -> None:
            state["started"] = time.perf_counter()
            channel.basic_consume("pika.in", on_message)

        channel.basic_qos(prefetch_count=PREFETCH, callback=consume)

    def on_in_open(conn: pika.SelectConnection) -> None:
        # a separate connection publishes, as RabbitMQ recommends (and as our worker does)
        conns.append(pika.SelectConnection(
            params, on_open_callback=lambda c: c.channel(on_open_callback=on_out_channel),
            on_open_error_callback=on_open_error, on_close_callback=on_closed,
            custom_ioloop=conn.ioloop))

    conns.append(pika.SelectConnection(params, on_open_callback=on_in_open,
                                       on_open_error_callback=on_open_error,
                                       on_close_callback=on_closed))
    conns[0].ioloop.start()
    if errors or state["failed"]:
        raise SystemExit(f"pika windowed hop failed: {errors or state}")
    pika_check_and_delete(url, messages)
    return messages / state["elapsed"]


def pika_confirm_each(url: str, messages: int) -> float:
    """The old baseline, kept as an extra line: BlockingConnection, wait for the confirm of every
    republish, then ack its original."""
    import pika

    pika_fill(url, messages)
    params = pika.URLParameters(url)
    conn = pika.BlockingConnection(params)
    channel = conn.channel()
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
    out_conn.close()
    conn.close()
    pika_check_and_delete(url, messages)
    return messages / elapsed


# -- ours: the bus worker in a child process --------------------------------------------------
CONFIG = """
broker:
  url: "{url}"
  prefetch: {prefetch}
  batch_size: {batch}
store:
  url: "{store}"
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


STORE = {"kind": "sqlite", "server": ""}  # --store postgresql: a private server's base URL
_databases = iter(range(1, 1_000_000))


def config_text(url: str) -> str:
    """bus.yaml of one run: SQLite in the run's directory, or a new database on the private
    PostgreSQL server (each run its own, as each SQLite run gets a new file)."""
    store = "sqlite:///var/bus.db"
    if STORE["kind"] == "postgresql":
        import psycopg

        name = f"bench_{next(_databases)}"
        server = STORE["server"]
        with psycopg.connect(server.replace("postgresql+psycopg", "postgresql"),
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        store = server.rsplit("/", 1)[0] + "/" + name
    return CONFIG.format(url=url, prefetch=PREFETCH, batch=BATCH, store=store)


def bus_round(url: str, messages: int, tracing: str = "off",
              code: Path | None = None) -> dict[str, float]:
    from integration_bus.envelope import Envelope
    from integration_bus.runtime import Bus

    root = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    (root / "config").mkdir()
    (root / "config" / "bus.yaml").write_text(config_text(url))
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
    """Run the worker for route 'bench' until it settled ``messages``; print timing and RSS."""
    import structlog

    from integration_bus.heap import freeze_startup
    from integration_bus.runtime import Bus

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    result = sys.stdout
    if os.environ.get("OTEL_TRACES_EXPORTER"):  # spans to /dev/null; the result to stdout
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of this process)
    with Bus.from_config_dir(Path(root) / "config", environ={}) as bus:
        stop = threading.Event()
        done, settled = threading.Event(), [0]

        def on_batch(batch: Any) -> None:  # on the lane's thread, once the batch is settled
            settled[0] += len(batch.items)
            if settled[0] >= messages:
                done.set()

        # settled batches are counted by the lane itself: a loop polling the count would take
        # the GIL from the lane hundreds of times a second (pika's side polls nothing either)
        worker = bus.worker(["bench"], on_batch=on_batch)
        freeze_startup()  # as `bus worker` does before it runs the worker
        thread = threading.Thread(target=worker.run, args=(stop,))
        started = time.perf_counter()
        thread.start()
        # pika's clock starts at basic.consume; the worker's, as it starts consuming (after
        # connecting: the worker's start-up is timed as "start-up")
        while not worker.state.connected and thread.is_alive():
            time.sleep(0.0005)
        consuming, cpu = time.perf_counter(), time.process_time()
        while not done.wait(1.0):
            if not thread.is_alive():
                raise SystemExit("the worker stopped before it settled every message")
        elapsed = time.perf_counter() - consuming
        startup = consuming - started
        cpu = time.process_time() - cpu
        stop.set()
        thread.join()
    print(json.dumps({"rate": messages / elapsed, "seconds": elapsed, "cpu": cpu,
                      "startup_s": startup,
                      "rss_mb": peak_rss_mb()}),
          file=result)


def scaling_round(url: str, messages: int, processes: int) -> float:
    """msg/s of the route worked by ``processes`` worker processes, from all consuming to done."""
    from integration_bus.envelope import Envelope
    from integration_bus.runtime import Bus

    root = Path(tempfile.mkdtemp(prefix="bench-hub-scale-"))
    (root / "config").mkdir()
    (root / "config" / "bus.yaml").write_text(config_text(url))
    with Bus.from_config_dir(root / "config", environ={}) as bus:
        drained = bus.transport.queue_stats("bus.route.drain")
        before = drained.messages if drained else 0
        publisher = bus.publisher()
        for start in range(0, messages, 1000):
            chunk = [Envelope.create("bench.in", payload(i), source="bench")
                     for i in range(start, min(start + 1000, messages))]
            assert all(o is None for o in publisher.publish_many(chunk))
        publisher.close()
        children = [subprocess.Popen([sys.executable, __file__, "--scale-child", str(root),
                                      str(index)]) for index in range(processes)]
        try:
            ready = [root / f"ready.{index}" for index in range(processes)]
            while not all(path.exists() for path in ready):
                if any(c.poll() is not None for c in children):
                    raise SystemExit("a scaling child died before it was ready")
                time.sleep(0.01)
            started = time.perf_counter()
            (root / "go").touch()
            while True:
                out = bus.transport.queue_stats("bus.route.drain")
                if out is not None and out.messages >= before + messages:
                    break
                time.sleep(0.005)
            elapsed = time.perf_counter() - started
        finally:
            (root / "stop").touch()
            for c in children:
                c.wait(60)
    return messages / elapsed


def scale_child(root: str, index: str) -> None:
    """A worker for route 'bench' that waits for ``go`` and works until ``stop`` appears."""
    import structlog

    from integration_bus.heap import freeze_startup
    from integration_bus.runtime import Bus

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    base = Path(root)
    with Bus.from_config_dir(base / "config", environ={}) as bus:
        worker = bus.worker(["bench"])
        freeze_startup()  # as `bus worker` does
        (base / f"ready.{index}").touch()
        while not (base / "go").exists():
            time.sleep(0.002)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        while not (base / "stop").exists():
            time.sleep(0.05)
        stop.set()
        thread.join()


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and
    exec, so the worker would report the bench's own peak if that was higher."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    parser.add_argument("--processes", type=int, metavar="N",
                        help="also time the route with 1 and with N worker processes")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite",
                        help="the worker's store: SQLite (default) or a private PostgreSQL "
                             "server started for the run (tests/support/services.py)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--scale-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    if args.scale_child:
        scale_child(*args.scale_child)
        return
    messages = args.messages or (5000 if args.quick else 30_000)
    rounds = args.rounds or (1 if args.quick else 3)
    url, drop_vhost = fresh_vhost(args.url)
    postgres = None
    if args.store == "postgresql":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from support.services import PrivatePostgres

        postgres = PrivatePostgres(Path(tempfile.mkdtemp(prefix="bench-hub-pg-")))
        postgres.start()
        STORE.update(kind="postgresql", server=postgres.url)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {messages} x {PAYLOAD_BYTES} B messages, "
          f"{rounds} round(s), prefetch {PREFETCH}, confirm window {WINDOW}, "
          f"tracing {args.tracing}, store {args.store}", flush=True)
    print(load_line("start"), flush=True)
    try:
        if args.against is not None:
            compare_tracing(url, messages, rounds, args.against.resolve())
            return
        ratios, ours_rates, rss = [], [], []
        for round_no in range(1, rounds + 1):
            load = os.getloadavg()[0]
            windowed = pika_windowed(url, messages)
            each = pika_confirm_each(url, min(messages, CONFIRM_EACH_SAMPLE))
            ours = bus_round(url, messages, args.tracing)
            ratios.append(ours["rate"] / windowed)
            ours_rates.append(ours["rate"])
            rss.append(ours["rss_mb"])
            print(f"round {round_no} (load {load:.2f}): pika windowed hop {windowed:,.0f} msg/s; "
                  f"bus {ours['rate']:,.0f} msg/s (ratio {ours['rate'] / windowed:.2f}); "
                  f"worker peak RSS {ours['rss_mb']:.0f} MB; worker CPU "
                  f"{ours['cpu'] / ours['seconds']:.0%} of wall; worker start-up "
                  f"{ours['startup_s'] * 1000:.0f} ms (not timed)", flush=True)
            print(f"round {round_no} extra: pika confirm-each loop {each:,.0f} msg/s "
                  f"({min(messages, CONFIRM_EACH_SAMPLE):,} msgs; bus / it "
                  f"{ours['rate'] / each:.2f})", flush=True)
        if args.processes:
            one = scaling_round(url, messages, 1)
            many = scaling_round(url, messages, args.processes)
            print(f"scaling: 1 process {one:,.0f} msg/s; {args.processes} processes "
                  f"{many:,.0f} msg/s (x{many / one:.2f})", flush=True)
    finally:
        drop_vhost()
        if postgres is not None:
            postgres.close()
    print(load_line("end"))
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
    print(load_line("end"))
    print(f"RESULT off/baseline rate={medians['off']:.3f} cpu={medians['off_cpu']:.3f}; "
          f"on/off rate={medians['on']:.3f} cpu={medians['on_cpu']:.3f}")


if __name__ == "__main__":
    main()
