"""The console's dead-letter pages on 100,000 dead letters in PostgreSQL.

    python bench/console.py [--quick] [--letters N] [--admin-url URL]

A fresh database on the local PostgreSQL (dropped afterwards) gets N dead letters (default
100,000, also with --quick) over 8 routes, 40 failure groups and 30 days; then a logged-in viewer
requests, through the console app (FastAPI TestClient: templates, sessions, the dead-letter
console, masking), the groups page and a list page filtered by route, error type and time at
page 3, many times each. The baseline, measured in the same run on the same data, is the bare SQL
the pages need (``store.dead_letters.groups``, and ``fetch`` + ``count``), so the ratio is what the
page adds. Last line: ``RESULT p95_ms=<the slower page's p95> groups_p95_ms=... list_p95_ms=...
ratio=<page p95 / SQL p95, the slower page>``.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from loadavg import load_line
from sqlalchemy import insert
from starlette.testclient import TestClient

from integration_bus.operators import Operator
from integration_bus.runtime import Bus
from integration_bus.store import dead_letters as query
from integration_bus.store import fingerprint
from integration_bus.store.dead_letters import Selection
from integration_bus.store.schema import dead_letters
from integration_bus.web.console.accounts import Accounts
from integration_bus.web.console.app import make_app

ROUTES = [f"route_{i}" for i in range(8)]
ERRORS = ["SchemaError", "MappingError", "StockShort", "SinkRejected", "DeliveryLimit"]
PASSWORD = "bench password 1234"


def config(url: str) -> str:
    routes = "\n".join(f"  {r}: {{from: [bench.{r}], to: [out]}}" for r in ROUTES)
    return (f"store: {{url: \"{url}\"}}\nsinks:\n  out: {{connector: jsonl, path: "
            f"var/out.jsonl}}\nroutes:\n{routes}\n")


def fill(bus: Bus, count: int) -> None:
    rng = random.Random(7)
    now = datetime.now(UTC)
    kinds = [(ROUTES[g % 8], ERRORS[g % 5], f"step_{g % 3}") for g in range(40)]
    rows: list[dict[str, Any]] = []
    with bus.store.db.begin() as conn:
        for i in range(count):
            route, error, step = kinds[rng.randrange(40)]
            message = f"{error} at {step}: order W-{i:08d} field qty value {rng.randrange(99)}"
            failed = now - timedelta(seconds=rng.randrange(30 * 86400))
            ident = uuid.uuid4().hex[:26]
            rows.append({
                "id": ident, "envelope_id": ident, "route": route, "step": step, "sink": None,
                "reason": "error", "error_type": error, "message": message,
                "traceback": "Traceback (most recent call last):\n  ...\n" * 5,
                "fingerprint": fingerprint(error, message, route, step),
                "attempts": [{"attempt": 1, "at": failed.isoformat(), "error": message}],
                "envelope": {"id": ident, "type": f"bench.{route}", "source": "bench",
                             "payload": {"order_id": f"W-{i:08d}", "qty": "2 pcs",
                                         "email": f"c{i}@example.com", "note": "x" * 300}},
                "source": "bench", "status": "new" if rng.random() < 0.8 else "replayed",
                "first_failed_at": failed, "last_failed_at": failed, "created_at": failed,
                "replays": 0})
            if len(rows) == 5000:
                conn.execute(insert(dead_letters), rows)
                rows.clear()
        if rows:
            conn.execute(insert(dead_letters), rows)
    # what autovacuum does after a bulk load: statistics and the visibility map (without it
    # an index-only scan still reads the table)
    with bus.store.db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "VACUUM ANALYZE dead_letters")


def p95(timings: list[float]) -> float:
    return statistics.quantiles(timings, n=20)[18] * 1000


def timed(page: Callable[[], Any], sql: Callable[[], Any], rounds: int
          ) -> tuple[list[float], list[float]]:
    """Page and SQL timed in turns, so the machine's load weighs on both alike."""
    page(), sql()  # warm: templates compiled, plans cached
    out: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for fn, into in ((page, out[0]), (sql, out[1])):
            started = time.perf_counter()
            fn()
            into.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (same data)")
    parser.add_argument("--letters", type=int, default=100_000)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    rounds = 30 if args.quick else 200
    print(load_line("start"), flush=True)
    name = f"bench_console_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        run(args, name, rounds)
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(args: argparse.Namespace, name: str, rounds: int) -> None:
    host = re.sub(r"^postgresql://", "", args.admin_url).rsplit("/", 1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp) / "config"
        config_dir.mkdir()
        (config_dir / "bus.yaml").write_text(config(f"postgresql+psycopg://{host}/{name}"))
        with Bus.from_config_dir(config_dir, environ={}) as bus:
            started = time.perf_counter()
            fill(bus, args.letters)
            print(f"{args.letters:,} dead letters written in {time.perf_counter() - started:.1f} s")
            Accounts(bus.store.db).add("vic", "viewer", PASSWORD, by=Operator.system("bench"))
            since = (datetime.now(UTC) - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M")
            filters = {"route": "route_3", "error_type": ERRORS[3], "since": since}
            selection = Selection(route="route_3", error_type=ERRORS[3],
                                  since=datetime.fromisoformat(since).replace(tzinfo=UTC))
            with TestClient(make_app(bus, secret="b" * 48)) as client:
                page = client.get("/login")
                token = re.search(r'name="csrf" value="([^"]+)"', page.text)
                assert token
                client.post("/login", data={"user": "vic", "password": PASSWORD,
                                            "csrf": token.group(1)})

                def groups_page() -> None:
                    answer = client.get("/dead-letters")
                    assert answer.status_code == 200 and "route_7" in answer.text

                def list_page() -> None:
                    answer = client.get("/dead-letters/list", params={**filters, "page": 3})
                    assert answer.status_code == 200 and "page 3 of" in answer.text

                def groups_sql() -> None:
                    with bus.store.db.begin(read_only=True) as conn:
                        query.groups(conn, Selection())

                def list_sql() -> None:
                    with bus.store.db.begin(read_only=True) as conn:
                        query.fetch(conn, selection, limit=50, offset=100)
                        query.count(conn, selection)

                results = {}
                for label, page_fn, sql_fn in (("groups", groups_page, groups_sql),
                                               ("list", list_page, list_sql)):
                    page_times, sql_times = timed(page_fn, sql_fn, rounds)
                    page_p95, sql_p95 = p95(page_times), p95(sql_times)
                    results[label] = (page_p95, sql_p95)
                    print(f"{label:6s} page p95 {page_p95:7.1f} ms   its SQL alone p95 "
                          f"{sql_p95:7.1f} ms   ({rounds} requests each)")
    worst = max(results, key=lambda k: results[k][0])
    print(load_line("end"))
    print(f"RESULT p95_ms={results[worst][0]:.1f} groups_p95_ms={results['groups'][0]:.1f} "
          f"list_p95_ms={results['list'][0]:.1f} "
          f"ratio={results[worst][0] / results[worst][1]:.2f}")


if __name__ == "__main__":
    main()
