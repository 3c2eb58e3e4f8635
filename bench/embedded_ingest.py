"""Embedded-mode ingest before/after the durable queue: the same POS file through ``bus run``'s
parts (pos_file source → route → jsonl sink) with no broker, on the code of another git ref
("before": kombu's in-memory queue) and on this tree ("after": the store's queue table), in the
same run, alternately.

    python bench/embedded_ingest.py [--quick] [--lines N] [--before REF] [--rounds R]

Each side runs in a child process on its own copy of the project: timed from the bus's start
until the sink holds every line (scan, publish, queue, worker, ledger, journal, sink); the
child's peak RSS is reported too. ``--before`` defaults to 99b6e63, the last commit with the
in-memory queue; that tree is exported with ``git archive`` and put first on the child's
``sys.path``.

Last line: ``RESULT ratio=<after/before lines per second> before=<lines/s> after=<lines/s>``
(the best round of each side).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from loadavg import load_line

REPO = Path(__file__).resolve().parent.parent
LAYOUT = REPO / "config" / "layouts" / "daily_sales.yaml"
NAME = "SALES_0042_20240301.DAT"
CONFIG = """
store: {{url: sqlite:///var/bus.db}}
sources:
  tills:
    connector: pos_file
    inboxes: [{{path: inbox}}]
    layout: {layout}
    pattern: "*.DAT"
    store_pattern: 'SALES_(?P<store>\\d{{4}})_'
    rescan_interval: 500ms
    poll_interval: 50ms
    node: bench
sinks:
  out: {{connector: jsonl, path: var/out.jsonl}}
routes:
  sales:
    from: [pos.sale_line]
    to: [out]
"""


def child(root: Path, lines: int) -> None:
    """Run the bus until the sink holds ``lines`` lines; print seconds and peak RSS."""
    import logging

    import structlog

    from integration_bus.registry import Registry
    from integration_bus.runtime import Bus
    from integration_bus.settings import load_config

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    registry = Registry.from_entry_points()
    out = root / "var" / "out.jsonl"
    with Bus(load_config(root / "config", registry, {}), registry=registry) as bus:
        stop = threading.Event()
        started = time.perf_counter()
        runner = threading.Thread(target=bus.run, args=(stop,), daemon=True)
        runner.start()
        while not (out.exists() and out.read_bytes().count(b"\n") >= lines):
            if not runner.is_alive():
                raise SystemExit("the bus stopped before delivering every line")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        stop.set()
        runner.join(60)
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) / 1024 for line in status
                   if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": elapsed, "rss_mb": rss}))


def project(base: Path, lines: int) -> Path:
    from connectors.pos_file.lane import write_daily_file
    from connectors.pos_file.layout_file import load_layout

    root = Path(tempfile.mkdtemp(prefix="side-", dir=base))
    (root / "config").mkdir()
    (root / "config" / "bus.yaml").write_text(CONFIG.format(layout=LAYOUT))
    (root / "inbox").mkdir()
    write_daily_file(root / "inbox" / NAME, load_layout(LAYOUT), store="0042", records=lines)
    return root


def side(tree: Path, base: Path, lines: int) -> dict[str, float]:
    root = project(base, lines)
    env = {k: v for k, v in os.environ.items() if k != "BUS_BROKER_URL"}
    env["PYTHONPATH"] = str(tree)
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                             str(root), "--tree", str(tree), "--lines", str(lines)],
                            capture_output=True, text=True, env=env, cwd=root)
    if result.returncode != 0:
        raise SystemExit(f"child failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return {"rate": lines / out["seconds"], "rss_mb": out["rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30,000 lines, one round")
    parser.add_argument("--lines", type=int)
    parser.add_argument("--before", default="99b6e63",
                        help="git ref of the 'before' code (default: the last commit with "
                             "kombu's in-memory queue)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, args.tree)
        child(Path(args.child), args.lines)
        return
    sys.path.insert(0, str(REPO))
    print(load_line("start"), flush=True)
    lines = args.lines or (30_000 if args.quick else 100_000)
    rounds = args.rounds or (1 if args.quick else 2)
    base = Path(tempfile.mkdtemp(prefix="bench-embedded-"))
    before_tree = base / "before"
    before_tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before],
                             capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(before_tree)], input=archive.stdout, check=True)
    print(f"{lines:,} POS lines, embedded mode, pos_file -> route -> jsonl; {os.cpu_count()} "
          f"cores; before = {args.before}, after = this tree", flush=True)
    best: dict[str, dict[str, float]] = {}
    for n in range(rounds):
        for name, tree in (("before", before_tree), ("after", REPO)):
            got = side(tree, base, lines)
            print(f"round {n + 1} {name}: {got['rate']:,.0f} lines/s, peak RSS "
                  f"{got['rss_mb']:.0f} MB", flush=True)
            if name not in best or got["rate"] > best[name]["rate"]:
                best[name] = got
    ratio = best["after"]["rate"] / best["before"]["rate"]
    print(load_line("end"))
    print(f"RESULT ratio={ratio:.2f} before={best['before']['rate']:.0f} "
          f"after={best['after']['rate']:.0f} before_rss_mb={best['before']['rss_mb']:.0f} "
          f"after_rss_mb={best['after']['rss_mb']:.0f}")


if __name__ == "__main__":
    main()
