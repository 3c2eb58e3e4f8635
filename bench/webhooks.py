"""Signed webhook ingest: the rest_shop receiver vs a minimal FastAPI endpoint that only
publishes with confirms, same broker, same client, same run.

    python bench/webhooks.py [--quick] [--requests N] [--rounds R] [--url amqp://...]

Each server runs in a child process (uvicorn, h11, one event loop); this process is the client:
8 concurrent senders posting Shopify-signed order webhooks (~1.3 KB), each a new event. Ours
verifies the HMAC, parses with exact numbers, checks and remembers the delivery and event ids
(SQLite), is published in a confirm window by the runtime's batch loop and answered by the
batch's ack after the confirm. The
baseline parses the body and publishes it with a confirm per request (a publisher per thread
of FastAPI's thread pool), nothing else. The last line is
``RESULT ratio=<ours/baseline> rate=<ours req/s> p99_ms=<ours p99>``.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request, Response
from loadavg import load_line
from vhost import fresh_vhost

SECRET = "bench-webhook-secret"
CONCURRENCY = 8
CONFIG = """
broker: {{url: "{url}"}}
store: {{url: sqlite:///var/bus.db}}
sources:
  hooks:
    connector: rest_shop
    webhooks:
      port: {port}
      shops:
        acme: {{platform: shopify, secrets: ["${{BENCH_SECRET}}"]}}
sinks:
  unused: {{connector: log}}
routes:
  orders: {{from: [shop.shopify.order_created], to: [unused]}}
"""



# -- the servers (child processes) ------------------------------------------------------------
def _bus(url: str, port: int) -> object:
    from connectors.rest_shop import make_plugin
    from integration_bus.registry import Registry
    from integration_bus.runtime import Bus
    from integration_bus.settings import load_config

    root = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    (root / "config").mkdir()
    (root / "config" / "bus.yaml").write_text(CONFIG.format(url=url, port=port))
    registry = Registry.from_entry_points()
    if "rest_shop" not in registry:
        registry.add(make_plugin())
    config = load_config(root / "config", registry, {"BENCH_SECRET": SECRET})
    return Bus(config, registry=registry)


def serve_receiver(url: str, port: int) -> None:
    from integration_bus.runtime import Bus
    from integration_bus.threads import stop_on_signals

    bus = _bus(url, port)
    assert isinstance(bus, Bus)
    # as `bus serve` (a handler calling stop.set() itself can deadlock: integration_bus/threads)
    with stop_on_signals() as stop, bus:
        bus.run(stop, workers=0)  # as `bus serve`: the receiver and the relay, no workers


def serve_baseline(url: str, port: int) -> None:
    import orjson
    import uvicorn
    from starlette.concurrency import run_in_threadpool

    from integration_bus.envelope import Envelope
    from integration_bus.transport.amqp import AmqpTransport

    transport = AmqpTransport(url)
    local = threading.local()
    app = FastAPI()

    def publish(body: bytes) -> None:
        publisher = getattr(local, "publisher", None)
        if publisher is None:
            publisher = local.publisher = transport.publisher()
        publisher.publish(Envelope.create("shop.shopify.order_created", orjson.loads(body),
                                          source="baseline"))

    @app.post("/webhooks/{shop}")
    async def receive(shop: str, request: Request) -> Response:
        await run_in_threadpool(publish, await request.body())  # returns after the confirm
        return Response(b'{"status":"accepted"}', media_type="application/json")

    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                lifespan="off", http="h11")


# -- the client --------------------------------------------------------------------------------
def _wait_up(port: int, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/webhooks/none", content=b"{}", timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit(f"no server on port {port} after {timeout} s")


def _order(n: int) -> dict[str, object]:
    return {"id": 7_000_000_000_000 + n, "name": f"#{n}", "email": "anna@example.com",
            "created_at": "2024-03-01T10:00:00-05:00", "updated_at": "2024-03-01T10:00:00-05:00",
            "currency": "USD", "financial_status": "paid", "total_price": "39.97",
            "customer": {"id": 42, "email": "anna@example.com", "first_name": "Anna",
                         "last_name": "Smith"},
            "line_items": [{"id": n * 10 + i, "sku": f"SKU-{i}", "quantity": 1 + i,
                            "price": "9.99", "title": "Hoodie - Grey - Large"}
                           for i in range(6)]}


def drive(port: int, requests: int, tag: str) -> tuple[float, float]:
    """Send ``requests`` new signed orders at concurrency 8: (req/s, p99 seconds)."""
    from connectors.rest_shop.fakeshop import Subscription, WebhookSender

    sender = WebhookSender(timeout=10.0)
    sub = Subscription(f"http://127.0.0.1:{port}/webhooks/acme", "shopify", SECRET.encode())
    deliveries = [sender.delivery(sub, _order(i), event_id=f"{tag}-{i}")
                  for i in range(requests + 100)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        warm = list(pool.map(sender.send_once, deliveries[:100]))
        started = time.perf_counter()
        attempts = list(pool.map(sender.send_once, deliveries[100:]))
        elapsed = time.perf_counter() - started
    sender.close()
    bad = [a.status for a in warm + attempts if a.status != 200]
    if bad:
        raise SystemExit(f"{tag}: {len(bad)} requests were not answered 200: {bad[:5]}")
    latencies = sorted(a.answered - a.started for a in attempts)
    return requests / elapsed, latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]


def measure(kind: str, url: str, requests: int, tag: str) -> tuple[float, float]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, __file__, "--serve", kind, url, str(port)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_up(port)
        return drive(port, requests, tag)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s")
    parser.add_argument("--requests", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--url", help="an existing vhost URL (default: a fresh vhost)")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, url, port = args.serve
        (serve_receiver if kind == "receiver" else serve_baseline)(url, int(port))
        return
    requests = args.requests or (2000 if args.quick else 6000)
    rounds = args.rounds or (1 if args.quick else 3)
    print(load_line("start"), flush=True)
    url, drop_vhost = fresh_vhost(args.url)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {requests} signed webhooks per side and round, "
          f"concurrency {CONCURRENCY}, {rounds} round(s)")
    ratios, rates, p99s = [], [], []
    with _bus(url, 0) as bus:  # type: ignore[attr-defined]
        bus.open()  # declare the route queue, so the baseline's publishes are routed too
    try:
        for round_no in range(1, rounds + 1):
            base_rate, base_p99 = measure("baseline", url, requests, f"b{round_no}")
            ours_rate, ours_p99 = measure("receiver", url, requests, f"r{round_no}")
            ratios.append(ours_rate / base_rate)
            rates.append(ours_rate)
            p99s.append(ours_p99 * 1000)
            print(f"round {round_no}: baseline {base_rate:,.0f} req/s (p99 "
                  f"{base_p99 * 1000:.1f} ms); receiver {ours_rate:,.0f} req/s (p99 "
                  f"{ours_p99 * 1000:.1f} ms); ratio {ours_rate / base_rate:.2f}")
    finally:
        drop_vhost()
    print(load_line("end"))
    print(f"RESULT ratio={statistics.median(ratios):.2f} rate={statistics.median(rates):.0f} "
          f"p99_ms={statistics.median(p99s):.1f}")


if __name__ == "__main__":
    main()
