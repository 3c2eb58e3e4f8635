"""SOAP postings: a route to the fake ERP (soap_erp sink) vs a bare zeep client loop calling
the same operation, same ERP, same run.

    python bench/soap.py [--quick] [--postings N] [--rounds R] [--url amqp://...]

The fake ERP runs in a child process (its own interpreter: it shares no GIL with either side).

- **Baseline**: ``zeep.Client`` on the same WSDL, ``PostStockAdjustment`` called in a loop
  (one call after the other, zeep's own requests transport, keep-alive), nothing else.
- **Ours**: postings published to RabbitMQ beforehand; one worker (this process) consumes the
  route queue, claims every key in the ledger (SQLite), calls the ERP through the soap_erp sink
  (document number, breaker, hardened parser, fault table; ``concurrency`` calls in flight,
  default 4), journals and acks. Timed from the end of a warm-up until every posting is acked.
  A second line shows the same route with ``concurrency: 1`` (strictly one call at a time).

Each posting is a new document (a new idempotency key). The last line is
``RESULT ratio=<ours/baseline> rate=<ours postings/s>``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WARMUP = 200
CONFIG = """
broker: {{url: "{url}", retry_tiers: [1s, 5s]}}
store: {{url: sqlite:///var/bus.db}}
sinks:
  erp:
    connector: soap_erp
    wsdl: config/erp/erp.wsdl
    service: ErpService
    port: StockPort
    address: "{erp}"
    operation: PostStockAdjustment
    document_number: {{field: DocumentHeader.ExternalReference}}
    lookup: {{operation: FindDocument}}
    timeouts: {{connect: 2s, operation: 10s}}
    concurrency: {concurrency}
routes:
  postings: {{from: [erp.stock_posting.requested], to: [erp]}}
"""



def serve_erp(port: int) -> None:
    from connectors.soap_erp.fakeerp import ErpServer
    from integration_bus.threads import stop_on_signals, wait_for_stop

    with stop_on_signals() as stop, ErpServer(port=port):
        wait_for_stop(stop)  # in slices; its handler takes no lock (integration_bus/threads)


def _request(n: int, tag: str) -> dict[str, Any]:
    return {"DocumentHeader": {"ExternalReference": f"{tag}-{n}", "PostingDate": "2024-03-01",
                               "HeaderText": "Inventory count +"},
            "Item": {"Material": f"MAT-{n % 500:05d}", "Plant": "1042",
                     "StorageLocation": "0001", "MovementType": "701", "Quantity": 1 + n % 7,
                     "UnitOfEntry": "EA", "AmountLC": "12.50", "SourceVersion": n}}


def baseline(erp_url: str, postings: int, tag: str) -> float:
    """Bare zeep: calls/s of a loop of PostStockAdjustment."""
    import zeep

    from connectors.soap_erp.fakeerp import WSDL_DIR

    client = zeep.Client(str(WSDL_DIR / "erp.wsdl"))
    service = client.create_service("{urn:retail:erp:wsdl}StockBinding", erp_url)
    for n in range(WARMUP):
        service.PostStockAdjustment(**_request(n, f"{tag}w"))
    started = time.perf_counter()
    for n in range(postings):
        service.PostStockAdjustment(**_request(n, tag))
    return postings / (time.perf_counter() - started)


def ours(url: str, erp_url: str, postings: int, tag: str, concurrency: int) -> float:
    """The route: postings/s from the end of the warm-up until all are acked."""
    from connectors.soap_erp import make_plugin
    from connectors.soap_erp.fakeerp import WSDL_DIR
    from integration_bus.envelope import Envelope
    from integration_bus.registry import Registry
    from integration_bus.runtime import Bus
    from integration_bus.settings import load_config
    from integration_bus.worker import Worker

    root = Path(tempfile.mkdtemp(prefix="bench-soap-"))
    shutil.copytree(WSDL_DIR, root / "config" / "erp")
    (root / "config" / "bus.yaml").write_text(CONFIG.format(url=url, erp=erp_url,
                                                            concurrency=concurrency))
    registry = Registry.from_entry_points()
    if "soap_erp" not in registry:
        registry.add(make_plugin())
    bus = Bus(load_config(root / "config", registry, {}), registry=registry).open()
    total = WARMUP + postings
    publisher = bus.publisher()
    for start in range(0, total, 1000):
        batch = [Envelope.create("erp.stock_posting.requested", _request(n, tag),
                                 source="bench", idempotency_key=f"{tag}-{n}")
                 for n in range(start, min(total, start + 1000))]
        if any(publisher.publish_many(batch)):
            raise SystemExit("publishing the postings failed")
    publisher.close()
    workers: list[Worker] = []
    stop = threading.Event()
    runner = threading.Thread(target=bus.run, args=(stop,),
                              kwargs={"sources": [], "on_worker": workers.append}, daemon=True)
    runner.start()
    try:
        started = _when(lambda: bool(workers) and workers[0].state.handled >= WARMUP)
        finished = _when(lambda: workers[0].state.handled >= total)
    finally:
        stop.set()
        runner.join(30)
        letters = bus.store.dead_letters()
        bus.close()
        shutil.rmtree(root, ignore_errors=True)
    if letters:
        raise SystemExit(f"{len(letters)} postings were dead-lettered: {letters[0]['message']}")
    return (total - WARMUP) / (finished - started) if finished > started else float("inf")


def _when(condition: Any, timeout: float = 600.0) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("the route did not finish in time")
        time.sleep(0.005)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s")
    parser.add_argument("--postings", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--url", help="an existing vhost URL (default: a fresh vhost)")
    parser.add_argument("--serve-erp", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_erp is not None:
        serve_erp(args.serve_erp)
        return
    postings = args.postings or (1500 if args.quick else 4000)
    rounds = args.rounds or (1 if args.quick else 3)
    print(load_line("start"), flush=True)
    url, drop_vhost = fresh_vhost(args.url)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    erp = subprocess.Popen([sys.executable, __file__, "--serve-erp", str(port)],
                           env={**os.environ, "PYTHONPATH": str(REPO)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    erp_url = f"http://127.0.0.1:{port}/erp"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {postings} postings per side and round "
          f"(+{WARMUP} warm-up), {rounds} round(s); fake ERP in a child process")
    ratios, rates = [], []
    try:
        _wait_up(port)
        for r in range(1, rounds + 1):
            base = baseline(erp_url, postings, f"b{r}")
            route = ours(url, erp_url, postings, f"r{r}", concurrency=4)
            single = ours(url, erp_url, postings, f"s{r}", concurrency=1)
            ratios.append(route / base)
            rates.append(route)
            print(f"round {r}: bare zeep loop {base:,.0f} calls/s; route {route:,.0f} "
                  f"postings/s (concurrency 4), {single:,.0f} postings/s (concurrency 1, "
                  f"ratio {single / base:.2f}); ratio {route / base:.2f}")
    finally:
        erp.send_signal(signal.SIGTERM)
        try:
            erp.wait(20)
        except subprocess.TimeoutExpired:
            erp.kill()
        drop_vhost()
    print(load_line("end"))
    print(f"RESULT ratio={statistics.median(ratios):.2f} rate={statistics.median(rates):.0f}")


def _wait_up(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the fake ERP did not listen on port {port}")


if __name__ == "__main__":
    main()
