"""JSON on the hot path: stdlib json vs orjson for envelope encode + decode (1 KB payloads).

    python bench/encoding.py [--quick]

Last line: ``RESULT ratio=<orjson/json speed-up> rate=<orjson round trips/s>``.
"""

from __future__ import annotations

import argparse
import json
import time
from decimal import Decimal

from loadavg import load_line

from integration_bus.envelope import Envelope


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    count = 20_000 if parser.parse_args().quick else 200_000
    print(load_line("start"), flush=True)
    payload = {"order_id": "W-00001", "total": "19.99",
               "lines": [{"sku": f"SKU-{i}", "qty": 2, "price": "9.95"} for i in range(8)],
               "note": "x" * 600}
    envelope = Envelope.create("order.created", payload, source="bench")

    def stdlib_round_trip() -> None:
        data = json.dumps(envelope.to_dict(), default=lambda o: str(o) if isinstance(
            o, Decimal) else None).encode()
        Envelope.from_dict(json.loads(data))

    def orjson_round_trip() -> None:
        Envelope.from_json(envelope.to_json())

    rates = {}
    for name, fn in (("json", stdlib_round_trip), ("orjson", orjson_round_trip)):
        fn()
        started = time.perf_counter()
        for _ in range(count):
            fn()
        rates[name] = count / (time.perf_counter() - started)
        print(f"{name:7s} {rates[name]:>10,.0f} envelope round trips/s "
              f"({len(envelope.to_json())} bytes each)")
    print(load_line("end"))
    print(f"RESULT ratio={rates['orjson'] / rates['json']:.2f} rate={rates['orjson']:.0f}")


if __name__ == "__main__":
    main()
