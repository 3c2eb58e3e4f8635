"""Order throughput: accepted web orders through the order process manager (route
``order_fulfilment``: sales order, a reservation per line, every step saved in the saga and
claimed in the ledger) against today's gate path before it (routes ``order_reservations`` +
``order_sales``: the same ERP requests, no saga), in the same run, alternately.

    python bench/orders.py [--quick] [--orders N] [--rounds R] [--url amqp://...]

Both run the scenario config (config/bus.yaml; the gate path's two routes put back in a copy)
against the fake ERP over real HTTP, embedded (SQLite store, in-process queue) unless ``--url``
names a RabbitMQ. Orders of 2 lines, all in stock (the common case). The last line is
``RESULT ratio=<saga orders/s / gate path orders/s> rate=<saga orders/s>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadavg import load_line  # noqa: E402

from integration_bus.envelope import Envelope  # noqa: E402
from integration_bus.runtime import Bus  # noqa: E402

GATE_PATH_ROUTES = """  order_reservations:                # one reservation per line at WH-01
    from: [order.accepted]
    pipeline: order_to_reservations
    to: [erp_reservations]
    retry: {max_attempts: 6, initial_delay: 1s, multiplier: 3, max_delay: 2m}
  order_sales:                       # the ERP sales order
    from: [order.accepted]
    pipeline: order_to_sales_order
    to: [erp_sales_orders]
    retry: {max_attempts: 6, initial_delay: 1s, multiplier: 3, max_delay: 2m}
"""
SAGA_ROUTE = (
    "  order_fulfilment:                  # the order process manager: sales order, "
    "reservations,\n"
    """    from: [order.accepted]           # re-source / back-order / cancel, compensation
    to: [order_saga]
    retry: {max_attempts: 8, initial_delay: 1s, multiplier: 3, max_delay: 2m}
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def project(folder: Path, variant: str) -> Path:
    for part in ("config", "mappings", "schemas"):
        shutil.copytree(ROOT / part, folder / part)
    config = folder / "config" / "bus.yaml"
    text = config.read_text()
    assert SAGA_ROUTE in text, "the scenario's order_fulfilment route changed: update the bench"
    if variant == "gate":
        config.write_text(text.replace(SAGA_ROUTE, GATE_PATH_ROUTES))
    return folder / "config"


def order(number: int) -> Envelope:
    lines = [{"line_no": 1, "sku": "TEE-BLK-M", "quantity": 1, "unit_price": "19.99",
              "line_total": "19.99", "discount": "0.00", "tax": "0.00"},
             {"line_no": 2, "sku": "MUG-WHT-01", "quantity": 1, "unit_price": "8.50",
              "line_total": "8.50", "discount": "0.00", "tax": "0.00"}]
    return Envelope.create("order.accepted", {
        "order_id": f"shopify-{number}", "channel": "shopify", "order_number": f"#{number}",
        "placed_at": "2026-12-05T10:00:00Z", "business_day": "2026-12-05", "currency": "EUR",
        "status": "paid", "customer": {"external_id": "4711", "name": "Ann Example",
                                       "email": "a@example.com"},
        "taxes_included": False, "lines": lines, "subtotal": "28.49",
        "discount_total": "0.00", "shipping_total": "0.00", "fee_total": "0.00",
        "tax_total": "0.00", "total": "28.49"}, source="bench", schema="canonical_order@2",
        idempotency_key=f"bench:{number}")


def one_round(variant: str, orders: int, url: str, offset: int) -> float:
    from connectors.rest_shop.fakeshop.api import build_shop_app
    from connectors.rest_shop.fakeshop.server import AppServer
    from connectors.rest_shop.fakeshop.state import ShopState
    from connectors.soap_erp.fakeerp.server import ErpServer
    from connectors.soap_erp.fakeerp.state import ErpState

    with tempfile.TemporaryDirectory(prefix=f"bench-orders-{variant}-") as tmp:
        folder = Path(tmp)
        config_dir = project(folder, variant)
        erp_state = ErpState()
        for sku in ("TEE-BLK-M", "MUG-WHT-01"):
            erp_state.seed(sku, "2001", "0100", orders * 10)
        erp = ErpServer(erp_state).start()
        shop = AppServer(build_shop_app(ShopState(token="demo-token"))).start()
        environ = {**os.environ, "BUS_BROKER_URL": url, "BUS_VAR_DIR": str(folder / "var"),
                   "BUS_STORE_URL": f"sqlite:///{folder / 'bus.db'}", "ERP_URL": erp.url,
                   "SHOP_URL": shop.url, "BUS_WEBHOOK_PORT": str(_free_port()),
                   "BUS_AVAILABILITY_PORT": str(_free_port()), "ERP_POLL_INTERVAL": "1h"}
        routes = ["order_fulfilment"] if variant == "saga" else ["order_reservations",
                                                                  "order_sales"]
        stop = threading.Event()
        try:
            with Bus.from_config_dir(config_dir, environ=environ) as bus:
                runner = threading.Thread(target=bus.run, args=(stop,),
                                          kwargs={"routes": routes, "sources": []}, daemon=True)
                runner.start()
                publisher = bus.publisher()
                # warm up: one order through, so start-up (mappings, WSDLs) is not timed
                for failure in publisher.publish_many([order(offset - 1)]):
                    assert failure is None, failure
                while erp_state.document_count("reservation") < 2:
                    time.sleep(0.01)
                if variant == "saga":
                    from integration_bus.retail.orders.book import SagaBook

                    book = SagaBook(bus.store)
                    while book.counts().get("state:final", 0) < 1:
                        time.sleep(0.01)
                batch = [order(offset + i) for i in range(orders)]
                started = time.perf_counter()
                for failure in publisher.publish_many(batch):
                    assert failure is None, failure
                deadline = time.monotonic() + 600
                while (erp_state.document_count("sales_order") < orders + 1
                       or erp_state.document_count("reservation") < 2 * orders + 2):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{variant}: not done after 600 s")
                    letters = bus.store.dead_letters(limit=1)
                    if letters:
                        raise RuntimeError(f"{variant}: a dead letter: {letters[0]['message']}")
                    time.sleep(0.01)
                if variant == "saga":
                    while book.counts().get("state:final", 0) < orders + 1:
                        time.sleep(0.01)
                elapsed = time.perf_counter() - started
                publisher.close()
                stop.set()
                runner.join(60)
        finally:
            stop.set()
            shop.stop()
            erp.stop()
        return orders / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--orders", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--url", default="", help="amqp://... (default: embedded)")
    args = parser.parse_args()
    orders = args.orders or (60 if args.quick else 400)
    rounds = args.rounds or (1 if args.quick else 3)
    print(load_line("start"), flush=True)
    rates: dict[str, list[float]] = {"gate": [], "saga": []}
    offset = 1
    for round_no in range(rounds):
        for variant in (("gate", "saga") if round_no % 2 == 0 else ("saga", "gate")):
            rate = one_round(variant, orders, args.url, offset)
            offset += orders + 1
            rates[variant].append(rate)
            print(f"round {round_no + 1} {variant:4s} {rate:8.1f} orders/s ({orders} orders, "
                  f"2 lines each, {'rabbitmq' if args.url else 'embedded'})")
    gate, saga = statistics.median(rates["gate"]), statistics.median(rates["saga"])
    print(load_line("end"))
    print(f"RESULT ratio={saga / gate:.2f} rate={saga:.1f}")


if __name__ == "__main__":
    main()
