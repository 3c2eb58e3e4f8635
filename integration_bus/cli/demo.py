"""``bus demo``: the reference retail scenario on the embedded defaults, with fake systems.

Starts the fake ERP (seeded with stock), the fake shop, and the bus (in-process broker, SQLite
under ``var/demo``) on the project's ``config/bus.yaml``, pointed at the fakes through the
environment. Then it plays the scenario (docs/scenario.md): a POS lane simulator drops daily
sales files into the watched folder, the shop sends signed order webhooks (two of them for more
than can be promised) and refund webhooks, and the ERP's stock changes flow back to the shop and
the stores. With ``--duration N`` it keeps producing traffic for N seconds. Either way it then
waits until everything has settled (queues, retries, outbox, inbox and the ERP poll are quiet),
stops, and prints a summary whose counts must add up.

The demo is a face (like the CLI). It finds the fake ERP, the fake shop and the POS lanes
through the ``integration_bus.simulators`` entry points (``demo_systems``), never by importing a
connector's fake.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from rich.console import Group
from rich.live import Live
from rich.table import Table

from integration_bus.cli.demo_orders import RACE_SEED, order_checks, play_races
from integration_bus.cli.demo_prices import price_checks, seed_prices
from integration_bus.cli.demo_systems import DemoSystems
from integration_bus.cli.summary import console, demo_summary, route_table
from integration_bus.runtime import Bus
from integration_bus.simulator import Simulators
from integration_bus.web.app import availability_service

__all__ = ["DemoRun", "Scenario", "run_demo"]

#: orders no one can promise: two of the last hoodie, and the sold-out iPod
SHORT_ORDERS = [[("WOO-HOODIE-GRY", 2, Decimal("39.00"))],
                [("IPOD-NANO-2GB", 1, Decimal("149.00")), ("MUG-WHITE", 1, Decimal("8.50"))]]
WATCHED = [("WH-01", "TEE-BLK-M"), ("WH-01", "MUG-WHT-01"), ("WH-01", "HOOD-GRY-M"),
           ("STORE-042", "PEN-STB-BLU"), ("STORE-107", "CHOC-70-100G")]
SECRET = "demo-webhook-secret"


@dataclass
class Scenario:
    """How much traffic: the fixed opening, then one more of each per interval (--duration)."""

    stores: tuple[str, ...] = ("0042", "0107")
    lines_per_file: int = 150
    orders: int = 10
    returns: int = 2
    file_every: float = 6.0
    order_every: float = 1.0
    seed: int = 7


@dataclass
class Counts:
    """What the simulators did (compared with what the bus saw in the summary)."""

    files: int = 0
    sale_lines: int = 0
    orders_sent: int = 0
    order_lines_sent: int = 0
    short_orders_sent: int = 0
    returns_sent: int = 0
    webhooks_ok: int = 0
    webhooks_failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {k: v for k, v in vars(self).items() if k != "lock"}


class DemoRun:
    """The fakes, the bus and the simulators of one demo run.

    ``simulators``: where the fakes come from (default: the installed
    ``integration_bus.simulators`` entry points)."""

    def __init__(self, config_dir: Path, state: Path, scenario: Scenario, *,
                 broker_url: str = "", clock: Callable[[], float] = time.time,
                 simulators: Simulators | None = None) -> None:
        self.scenario = scenario
        self.state = state
        self.inbox = state / "pos" / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        systems = DemoSystems(simulators or Simulators.from_entry_points())
        self.erp = systems.erp
        self.seeded = self.erp.seeded  # the stock `bus sim erp` starts with, too
        for (_, plant, location), stock in RACE_SEED.items():  # the order races' locations
            for sku, on_hand in stock.items():
                self.erp.state.seed(sku, plant, location, on_hand)
        self.shop = systems.shop
        self.shop_state = self.shop.state
        self.lanes = systems.lanes
        self.webhook_port = _free_port()
        self.availability_port = _free_port()
        self.environ = {
            **os.environ, "BUS_VAR_DIR": str(state), "BUS_BROKER_URL": broker_url,
            "BUS_STORE_URL": f"sqlite:///{state / 'bus.db'}", "ERP_URL": self.erp.url,
            "SHOP_URL": self.shop.url, "BUS_WEBHOOK_PORT": str(self.webhook_port),
            "SHOP_WEBHOOK_SECRET": SECRET, "SHOP_API_TOKEN": self.shop.token,
            "ERP_POLL_INTERVAL": "1s", "BUS_AVAILABILITY_PORT": str(self.availability_port)}
        self.config_dir = config_dir
        self.clock = clock
        self.counts = Counts()
        self.bus: Bus | None = None
        self._rng = random.Random(scenario.seed)
        self._order_ids = itertools.count(1)
        self._refund_ids = itertools.count(700_001)
        self._sent_orders: list[dict[str, Any]] = []

    @property
    def availability_url(self) -> str:
        return f"http://127.0.0.1:{self.availability_port}/availability"

    # -- lifecycle ------------------------------------------------------------------------------
    @contextmanager
    def running(self, stop: threading.Event) -> Iterator[Bus]:
        with ExitStack() as stack:
            self.erp.start()
            stack.callback(self.erp.stop)
            self.shop.start()
            stack.callback(self.shop.stop)
            self.lanes.start()
            stack.callback(self.lanes.stop)
            bus = stack.enter_context(Bus.from_config_dir(self.config_dir, environ=self.environ,
                                                          clock=self.clock))
            self.bus = bus
            runner = threading.Thread(target=bus.run, args=(stop,), name="demo-bus", daemon=True,
                                      kwargs={"services": availability_service(bus)})
            runner.start()
            stack.callback(runner.join, 60)
            stack.callback(stop.set)
            yield bus

    def wait_ready(self, stop: threading.Event, timeout: float = 60.0) -> None:
        """Until the webhook receiver answers and the first ERP poll reached the projection."""
        assert self.bus is not None
        url = f"http://127.0.0.1:{self.webhook_port}/healthz"
        stock = self.bus.stock
        seeded = self.seeded

        def ready() -> bool:
            try:
                if httpx.get(url, timeout=1.0).status_code != 200:
                    return False
            except httpx.TransportError:
                return False
            return len(stock.all()) >= seeded

        _wait(ready, stop, timeout, "the bus did not become ready (receiver, first ERP poll)")

    # -- simulators -----------------------------------------------------------------------------
    def drop_sales_file(self, store: str, number: int) -> None:
        """A till's end-of-day file, written under a temp name and renamed into place."""
        day = date(2024, 3, 1) + timedelta(days=number - 1)
        self.lanes.drop_daily_file(
            self.inbox, self.config_dir / "layouts" / "daily_sales.yaml",
            name=f"SALES_{store}_{day:%Y%m%d}_{number}.DAT", store=store,
            records=self.scenario.lines_per_file,
            seed=self.scenario.seed * 1000 + number * 10 + int(store), day=day, seq=number)
        self.counts.add(files=1, sale_lines=self.scenario.lines_per_file)

    def send_order(self, lines: list[tuple[str, int, Decimal]] | None = None, *,
                   short: bool | None = None) -> str | None:
        """Send one order webhook (random lines unless given; given lines are a short order
        unless ``short=False``); the canonical order id if the receiver took it."""
        short = lines is not None if short is None else short
        if lines is None:
            prices = self.shop.skus
            skus = self._rng.sample(sorted(prices), k=self._rng.randint(1, 2))
            lines = [(sku, self._rng.randint(1, 2), prices[sku]) for sku in skus]
        number = next(self._order_ids)
        now = datetime.now(UTC).replace(microsecond=0)
        order = {
            "id": 9_007_199_254_740_993 + number, "name": f"#{1000 + number}",
            "email": f"customer{number}@example.com", "created_at": now.isoformat(),
            "updated_at": now.isoformat(), "currency": "EUR", "financial_status": "paid",
            "total_price": str(sum(price * qty for _, qty, price in lines)),
            "customer": {"id": 500 + number, "email": f"customer{number}@example.com",
                         "first_name": "Demo", "last_name": f"Customer {number}"},
            "line_items": [{"id": (9_007_199_254_740_993 + number) * 10 + i, "sku": sku,
                            "quantity": qty, "price": str(price)}
                           for i, (sku, qty, price) in enumerate(lines)]}
        if self._post("orders/create", order, event=f"order-{number}"):
            self.counts.add(orders_sent=1, order_lines_sent=len(lines),
                            short_orders_sent=int(short))
            if not short:
                self._sent_orders.append(order)
            return f"shopify-{order['id']}"
        return None

    def send_return(self) -> None:
        if not self._sent_orders:
            return
        order = self._sent_orders.pop(0)
        item = order["line_items"][0]
        refund = {
            "id": next(self._refund_ids), "order_id": order["id"],
            "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "note": "did not fit", "restock": True,
            "refund_line_items": [{"id": item["id"] + 5, "quantity": 1, "line_item_id": item["id"],
                                   "restock_type": "return", "subtotal": item["price"],
                                   "line_item": {"id": item["id"], "sku": item["sku"],
                                                 "price": item["price"]}}],
            "transactions": [{"kind": "refund", "amount": item["price"], "currency": "EUR"}]}
        if self._post("refunds/create", refund, event=f"refund-{refund['id']}"):
            self.counts.add(returns_sent=1)

    def _post(self, topic: str, payload: dict[str, Any], *, event: str) -> bool:
        status = self.shop.send_webhook(
            f"http://127.0.0.1:{self.webhook_port}/webhooks/acme", secret=SECRET.encode(),
            topic=topic, payload=payload, event_id=event)
        ok = status is not None and 200 <= status < 300
        self.counts.add(webhooks_ok=int(ok), webhooks_failed=int(not ok))
        return ok

    def play(self, stop: threading.Event, until: float | None) -> None:
        """The opening (files, orders, short orders, returns), then more until ``until``."""
        sc = self.scenario
        seed_prices(self)
        for number, store in enumerate(sc.stores, start=1):
            self.drop_sales_file(store, number)
        for index in range(sc.orders):
            if stop.is_set():
                return
            self.send_order()
            if index in (2, 6):
                self.send_order(SHORT_ORDERS[0 if index == 2 else 1])
        play_races(self, stop)
        for _ in range(sc.returns):
            if stop.is_set():
                return
            self.send_return()
        if until is None:
            return
        files = itertools.count(len(sc.stores) + 1)
        next_file = time.monotonic() + sc.file_every
        while not stop.wait(sc.order_every) and time.monotonic() < until:
            self.send_order()
            if self._rng.random() < 0.15:
                self.send_return()
            if time.monotonic() >= next_file:
                self.drop_sales_file(self._rng.choice(sc.stores), next(files))
                next_file += sc.file_every

    # -- settling and reporting -----------------------------------------------------------------
    def quiet(self) -> bool:
        """Nothing queued, waiting to retry or in the outbox; no file waiting in the inbox."""
        assert self.bus is not None
        bus = self.bus
        for route in bus.topology.routes:
            stats = bus.transport.queue_stats(route.queue)
            if stats and stats.messages:
                return False
        if bus.transport.retry_waiting() or bus.store.outbox_waiting():
            return False
        return not any(p.is_file() for p in self.inbox.iterdir())

    def settle(self, stop: threading.Event, timeout: float) -> bool:
        """Wait until the bus stays quiet and the ERP's change log stops growing for a while
        (longer than the poll interval, so the last changes have been fetched)."""
        assert self.bus is not None
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        changes = -1
        while time.monotonic() < deadline:
            now_changes = len(self.erp.state.changes)
            if self.quiet() and now_changes == changes:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= 3.0:
                    return True
            else:
                quiet_since = None
            changes = now_changes
            if stop.wait(0.25):
                return False
        return False

    def reconcile(self) -> dict[str, Any]:
        """``bus reconcile`` while the fakes still run: compared pairs and mismatches."""
        from integration_bus.errors import BusError
        from integration_bus.reconcile import reconcile_bus

        assert self.bus is not None
        try:
            report = reconcile_bus(self.bus)
        except BusError as exc:
            return {"error": str(exc)}
        return {"compared": report.compared, "mismatched": report.mismatched,
                "mismatch_ratio": round(report.ratio, 6),
                "mismatches": [m.to_dict() for m in report.mismatches]}

    def availability_endpoint(self) -> dict[str, Any]:
        """What ``GET /availability`` answers for the first watched SKU (served by the bus)."""
        location, sku = WATCHED[0]
        try:
            response = httpx.get(self.availability_url,
                                 params={"sku": sku, "location": location}, timeout=5.0)
        except httpx.TransportError as exc:
            return {"url": self.availability_url, "error": str(exc)}
        return {"url": self.availability_url, "status": response.status_code,
                "body": response.json() if response.content else None}

    def availability(self) -> list[dict[str, Any]]:
        assert self.bus is not None
        out = []
        for location, sku in WATCHED:
            level = self.bus.stock.get(sku, location)
            out.append({"location": location, "sku": sku,
                        "on_hand": str(level.on_hand) if level else None,
                        "reserved": str(level.reserved) if level else None,
                        "available": str(level.available) if level else None})
        return out

    def summary(self, elapsed: float, settled: bool) -> dict[str, Any]:
        assert self.bus is not None
        bus = self.bus
        summary = demo_summary(bus, elapsed)
        routes = {row["route"]: row for row in summary["routes"]}
        counts = self.counts.as_dict()
        letters = bus.store.dead_letters()
        groups: dict[str, int] = {}
        for letter in letters:
            key = f"{letter['route'] or '(source)'}: {letter['error_type']}"
            groups[key] = groups.get(key, 0) + 1
        erp = self.erp.state
        out_dir = self.state / "pos" / "out"
        store_files = sorted(p for p in out_dir.rglob("STOCK_*.CSV")) if out_dir.exists() else []
        reconciled = self.reconcile()
        summary_endpoint = self.availability_endpoint()
        refused = [letter for letter in letters if letter["route"] == "order_availability"]
        accepted = counts["orders_sent"] - len(refused)
        order_checks_, order_exceptions = order_checks(self, accepted)
        price_checks_, prices = price_checks(self)
        checks = {
            "every webhook answered 2xx": counts["webhooks_failed"] == 0,
            "every sale line reached the bus":
                routes["pos_sales"]["received"] == counts["sale_lines"],
            "every order reached the gate":
                routes["order_availability"]["received"] == counts["orders_sent"],
            "short orders are business dead letters": len(refused) >= counts[
                "short_orders_sent"] and all(r["error_type"] == "StockShort" for r in refused),
            "every return reached the bus":
                routes["web_returns"]["received"] == counts["returns_sent"],
            "one ERP posting per sold and returned line (or its dead letter)":
                erp.document_count("stock_posting") + routes["sale_postings"]["dead_letters"]
                + routes["return_postings"]["dead_letters"]
                == routes["pos_sales"]["delivered"] + counts["returns_sent"],
            **order_checks_,
            **price_checks_,
            "every route balanced": summary["nothing_lost"],
            "settled before stopping": settled,
            "GET /availability answers":
                summary_endpoint.get("status") == 200,
            "ERP, shop and projection agree (bus reconcile)":
                reconciled.get("mismatched") == 0 and reconciled.get("compared", 0) > 0,
        }
        summary.update({
            "simulated": counts,
            "erp": {"documents": erp.document_count(), "postings": erp.document_count(
                "stock_posting"), "reservations": erp.document_count("reservation"),
                    "sales_orders": erp.document_count("sales_order"),
                    "repeats_absorbed": sum(erp.duplicates.values())},
            "shop": {"inventory_levels": len(self.shop_state.inventory)},
            "store_files": len(store_files),
            "availability": self.availability(),
            "availability_endpoint": summary_endpoint,
            "reconcile": reconciled,
            "order_exceptions": order_exceptions,
            "prices": prices,
            "dead_letter_groups": groups,
            "checks": checks,
            "nothing_lost": all(checks.values()),
        })
        return summary

    def live_view(self, elapsed: float) -> Group:
        assert self.bus is not None
        rows = demo_summary(self.bus, elapsed)["routes"]
        stock = Table(title="available to promise (projection)")
        for column in ("location", "sku", "on hand", "reserved", "available"):
            stock.add_column(column, justify="left" if column in ("location", "sku") else "right")
        for row in self.availability():
            stock.add_row(row["location"], row["sku"], row["on_hand"] or "-",
                          row["reserved"] or "-", row["available"] or "-")
        c = self.counts.as_dict()
        line = (f"simulated: {c['files']} POS files ({c['sale_lines']} lines), "
                f"{c['orders_sent']} orders ({c['short_orders_sent']} short), "
                f"{c['returns_sent']} returns; dead letters: "
                f"{sum(self.bus.store.dead_letter_counts().values())}\n"
                f"try: curl '{self.availability_url}?sku=TEE-BLK-M&location=WH-01'")
        return Group(route_table(rows, title=f"bus demo, {elapsed:.0f} s (Ctrl-C stops)"), stock,
                     line)


def run_demo(config_dir: Path, *, duration: float | None, as_json: bool, keep: bool,
             stop: threading.Event, settle_timeout: float = 90.0) -> dict[str, Any]:
    root = Path(config_dir).resolve().parent
    state = root / "var" / "demo"
    if not keep and state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    demo = DemoRun(Path(config_dir).resolve(), state, Scenario())
    started = time.monotonic()
    show_live = not as_json and console().is_terminal
    with demo.running(stop):
        demo.wait_ready(stop)
        until = None if duration is None else started + duration
        player = threading.Thread(target=demo.play, args=(stop, until), name="demo-player",
                                  daemon=True)
        player.start()
        settled = False
        if show_live:
            with Live(demo.live_view(0), console=console(), refresh_per_second=2) as live:
                settled = _watch(demo, player, stop, settle_timeout,
                                 lambda: live.update(demo.live_view(time.monotonic() - started)))
        else:
            settled = _watch(demo, player, stop, settle_timeout, lambda: None)
        summary = demo.summary(time.monotonic() - started, settled)
    return summary


def _watch(demo: DemoRun, player: threading.Thread, stop: threading.Event, timeout: float,
           refresh: Callable[[], None]) -> bool:
    while player.is_alive():
        player.join(0.5)
        refresh()
    if stop.is_set():
        return False
    outcome: list[bool] = []
    settler = threading.Thread(target=lambda: outcome.append(demo.settle(stop, timeout)),
                               daemon=True)
    settler.start()
    while settler.is_alive():
        settler.join(0.5)
        refresh()
    return bool(outcome and outcome[0])


def _wait(condition: Callable[[], bool], stop: threading.Event, timeout: float,
          message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if stop.is_set():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        stop.wait(0.2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
