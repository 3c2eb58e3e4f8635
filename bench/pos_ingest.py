"""POS file ingest: the ``pos_file`` source end to end vs raw pika windowed-confirm publishing of
the same records, on the same broker, in the same run.

    python bench/pos_ingest.py [--quick] [--lines N] [--url amqp://...]

The file is fixed width, 120 characters and 12 fields per detail line (``config/layouts/
daily_sales.yaml``), with a header and a trailer whose control totals hold. ``--quick`` uses
100,000 lines (under 60 s); the full run 1,000,000.

- **Ours.** The real source in a child process (its peak RSS is its own): discover the file,
  claim it, scan it (sha256, every field parsed, control totals), then publish one envelope per
  line with windowed confirms, ledger progress per window, archive. Timed from start to archive.
- **Baseline.** pika's SelectConnection reading the same file and publishing each detail line as
  it is (120 bytes, no parsing, no envelope) with up to 512 unconfirmed — the bus's confirm
  window — persistent and mandatory, into the same quorum queue (purged between the sides).
  Also printed, not used in the ratio: pika's BlockingConnection confirming every publish (a
  lower bound, on a sample), and the bus's own publisher sending envelopes built beforehand (the
  ceiling of any source on this transport, on a sample).

Last line: ``RESULT ratio=<ours/pika windowed> rate=<ours lines/s> rss_mb=<our peak RSS>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from loadavg import load_line
from vhost import fresh_vhost, rabbitmqctl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LAYOUT = REPO / "config" / "layouts" / "daily_sales.yaml"
NAME = "SALES_0042_20240301.DAT"
QUEUE = "bus.route.bench"
WINDOW = 512
BLOCKING_SAMPLE = 5_000
PUBLISHER_SAMPLE = 30_000

CONFIG = """
broker: {{url: "{url}"}}
store: {{url: sqlite:///var/bus.db}}
sources:
  tills:
    connector: pos_file
    inboxes: [{{path: inbox}}]
    layout: {layout}
    pattern: "*.DAT"
    store_pattern: 'SALES_(?P<store>\\d{{4}})_'
    node: bench
sinks:
  unused: {{connector: log}}
routes:
  bench:
    from: [pos.sale_line]
    to: [unused]
"""



def make_file(path: Path, lines: int) -> int:
    """A valid daily file of ``lines`` detail lines: a rendered block of 10,000 distinct lines,
    repeated, then a trailer whose count and amount sum match. Returns the file size."""
    from connectors.pos_file.lane import daily_file_bytes
    from connectors.pos_file.layout_file import load_layout
    from connectors.pos_file.parser import Record
    from connectors.pos_file.render import render_line

    layout = load_layout(LAYOUT)
    block_lines = min(lines, 10_000)
    parts = daily_file_bytes(layout, store="0042", records=block_lines).split(b"\r\n")
    header, details = parts[0], parts[1:1 + block_lines]
    block_total = layout.parse_line(parts[1 + block_lines].decode(), 0).values["amount_total"]
    times, rest = divmod(lines, block_lines)
    rest_total = sum((layout.parse_line(d.decode(), 0).values["amount"] for d in details[:rest]),
                     start=Decimal(0))
    trailer = render_line(layout, Record("trailer", {
        "record_count": lines, "amount_total": block_total * times + rest_total}))
    block = b"\r\n".join(details) + b"\r\n"
    with path.open("wb") as out:
        out.write(header + b"\r\n")
        for _ in range(times):
            out.write(block)
        if rest:
            out.write(b"\r\n".join(details[:rest]) + b"\r\n")
        out.write(trailer.encode() + b"\r\n")
    return path.stat().st_size


# -- baseline: raw pika --------------------------------------------------------------------------
def pika_windowed(url: str, path: Path, lines: int) -> float:
    """SelectConnection, up to WINDOW unconfirmed, each detail line as the body."""
    import pika  # type: ignore[import-untyped]

    source = path.open("rb")
    source.readline()  # header
    state = {"sent": 0, "acked": 0, "nacked": 0, "started": 0.0, "elapsed": 0.0}
    props = pika.BasicProperties(delivery_mode=2, content_type="text/plain")
    connection: pika.SelectConnection

    def pump(channel: pika.channel.Channel) -> None:
        while state["sent"] < lines and state["sent"] - state["acked"] < WINDOW:
            body = source.readline().rstrip(b"\r\n")
            channel.basic_publish("bus.ingress", "pos.sale_line", body, props, mandatory=True)
            state["sent"] += 1

    def on_confirm(frame: pika.frame.Method) -> None:
        method = frame.method
        confirmed = method.delivery_tag - state["acked"] if method.multiple else 1
        state["acked"] += confirmed
        if isinstance(method, pika.spec.Basic.Nack):
            state["nacked"] += confirmed
        if state["acked"] >= lines:
            state["elapsed"] = time.perf_counter() - state["started"]
            connection.close()
            return
        pump(channel_ref[0])

    channel_ref: list[pika.channel.Channel] = []

    def on_channel(channel: pika.channel.Channel) -> None:
        channel_ref.append(channel)
        channel.add_on_return_callback(lambda *args: state.__setitem__("nacked",
                                                                       state["nacked"] + 1))
        channel.confirm_delivery(on_confirm)
        state["started"] = time.perf_counter()
        pump(channel)

    connection = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_open_error_callback=lambda c, error: c.ioloop.stop(),
        on_close_callback=lambda c, reason: c.ioloop.stop())
    connection.ioloop.start()
    source.close()
    assert state["acked"] >= lines and state["nacked"] == 0, state
    return lines / state["elapsed"]


def pika_blocking(url: str, path: Path, sample: int) -> float:
    """BlockingConnection waiting for the confirm of every publish (a lower bound)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, content_type="text/plain")
    with path.open("rb") as source:
        source.readline()
        started = time.perf_counter()
        for _ in range(sample):
            channel.basic_publish("bus.ingress", "pos.sale_line", source.readline().rstrip(),
                                  props, mandatory=True)
        elapsed = time.perf_counter() - started
    connection.close()
    return sample / elapsed


# -- reference: the bus's own publisher, no file ------------------------------------------------
def bus_publisher_alone(url: str, root: Path, path: Path, sample: int) -> float:
    """The bus publisher (kombu/py-amqp, windowed confirms) sending envelopes built beforehand
    from the file's first ``sample`` records: the ceiling any source on this transport has."""
    from connectors.pos_file import plugin
    from connectors.pos_file.layout_file import load_layout
    from connectors.pos_file.windows import json_value
    from integration_bus.envelope import Envelope
    from integration_bus.registry import Registry
    from integration_bus.runtime import Bus
    from integration_bus.settings import load_config

    layout = load_layout(LAYOUT)
    envelopes = []
    with path.open("rb") as source:
        source.readline()
        for number in range(sample):
            record = layout.parse_line(source.readline().rstrip(b"\r\n").decode(), number)
            payload = {k: json_value(v) for k, v in record.values.items() if k != "amount"}
            envelopes.append(Envelope.create(
                "pos.sale_line", {**payload, "store": "0042"}, source="tills",
                idempotency_key=f"pos:0042:{'0' * 64}:{number}",
                headers={"source_ref": {"file": NAME, "line": number, "store": "0042"}}))
    registry = Registry.from_entry_points()
    if "pos_file" not in registry:
        registry.add(plugin)
    with Bus(load_config(root / "config", registry, {}), registry=registry) as bus:
        publisher = bus.publisher()
        started = time.perf_counter()
        for start in range(0, sample, 1000):
            assert publisher.publish_many(envelopes[start:start + 1000]) == [None] * len(
                envelopes[start:start + 1000])
        elapsed = time.perf_counter() - started
        publisher.close()
    return sample / elapsed


# -- ours: the pos_file source in a child process ---------------------------------------------
def child(root: str) -> None:
    """Run the source until the file is archived; print timing and peak RSS as JSON."""
    import logging

    import structlog

    from connectors.pos_file import PosFileSource, plugin
    from integration_bus.heap import freeze_startup
    from integration_bus.registry import Registry
    from integration_bus.runtime import Bus
    from integration_bus.settings import load_config

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    registry = Registry.from_entry_points()
    if "pos_file" not in registry:  # until setup.cfg names the entry point
        registry.add(plugin)
    archive = Path(root) / "inbox.work" / "archive" / NAME
    with Bus(load_config(Path(root) / "config", registry, {}), registry=registry) as bus:
        source, publisher = bus.source("tills"), bus.publisher()
        assert isinstance(source, PosFileSource)
        freeze_startup()  # as `bus serve` and `bus run` do before they run the sources
        stop = threading.Event()
        thread = threading.Thread(target=source.run, args=(publisher, stop))
        started = time.perf_counter()
        thread.start()
        while not archive.exists():
            if not thread.is_alive():
                raise SystemExit("the source stopped before archiving the file")
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join()
        publisher.close()
    print(json.dumps({"seconds": elapsed, "rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and
    exec, so a child would report its parent's peak if that was higher."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours(url: str, root: Path, path: Path, lines: int) -> dict[str, float]:
    (root / "inbox").mkdir(exist_ok=True)
    os.rename(path, root / "inbox" / NAME)
    result = subprocess.run([sys.executable, __file__, "--child", str(root)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"child failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    os.rename(root / "inbox.work" / "archive" / NAME, path)  # back, for the next side
    return {"rate": lines / out["seconds"], "rss_mb": out["rss_mb"], "seconds": out["seconds"]}


def queued(url: str) -> int:
    from integration_bus.transport.amqp import AmqpTransport

    stats = AmqpTransport(url).queue_stats(QUEUE)
    return stats.messages if stats else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 lines, under 60 s")
    parser.add_argument("--lines", type=int)
    parser.add_argument("--url", help="an existing empty vhost URL (default: a fresh vhost)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    lines = args.lines or (100_000 if args.quick else 1_000_000)
    print(load_line("start"), flush=True)
    url, drop_vhost = fresh_vhost(args.url)
    root = Path(tempfile.mkdtemp(prefix="bench-pos-"))
    (root / "config").mkdir()
    (root / "config" / "bus.yaml").write_text(CONFIG.format(url=url, layout=LAYOUT))
    try:
        from connectors.pos_file import plugin
        from integration_bus.registry import Registry
        from integration_bus.runtime import Bus
        from integration_bus.settings import load_config

        registry = Registry.from_entry_points()
        if "pos_file" not in registry:
            registry.add(plugin)
        with Bus(load_config(root / "config", registry, {}), registry=registry):
            pass  # declares the topology: bus.ingress → bus.route.bench (quorum)
        path = root / NAME
        size = make_file(path, lines)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}; file: {lines:,} lines x 120 chars (12 fields), "
              f"{size / 1e6:.0f} MB", flush=True)
        baseline = pika_windowed(url, path, lines)
        assert queued(url) == lines
        rabbitmqctl("purge_queue", "-p", url.rsplit("/", 1)[1], QUEUE)
        print(f"pika windowed (SelectConnection, {WINDOW} in flight): {baseline:,.0f} msg/s",
              flush=True)
        blocking = pika_blocking(url, path, BLOCKING_SAMPLE)
        rabbitmqctl("purge_queue", "-p", url.rsplit("/", 1)[1], QUEUE)
        print(f"pika blocking (confirm per publish, {BLOCKING_SAMPLE:,} msgs, lower bound): "
              f"{blocking:,.0f} msg/s", flush=True)
        alone = bus_publisher_alone(url, root, path, PUBLISHER_SAMPLE)
        rabbitmqctl("purge_queue", "-p", url.rsplit("/", 1)[1], QUEUE)
        print(f"bus publisher alone (envelopes built beforehand, {PUBLISHER_SAMPLE:,} msgs): "
              f"{alone:,.0f} msg/s, {alone / baseline:.2f} of pika windowed", flush=True)
        result = ours(url, root, path, lines)
        assert queued(url) == lines, "the source did not publish every line exactly once"
        print(f"pos_file source: {result['rate']:,.0f} lines/s end to end "
              f"({result['seconds']:.1f} s: scan + publish + ledger + archive); "
              f"peak RSS {result['rss_mb']:.0f} MB", flush=True)
    finally:
        drop_vhost()
    print(f"(vs pika blocking: ratio {result['rate'] / blocking:.2f}; vs the bus publisher "
          f"alone: {result['rate'] / alone:.2f})")
    print(load_line("end"))
    print(f"RESULT ratio={result['rate'] / baseline:.2f} rate={result['rate']:.0f} "
          f"rss_mb={result['rss_mb']:.0f}")


if __name__ == "__main__":
    main()
