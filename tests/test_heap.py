"""``freeze_startup``: start-up's objects leave the collector's view, garbage made afterwards is
still collected. Each check runs in a fresh interpreter (freezing the test process's own heap
would hide its garbage from every later test)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_startup_objects_are_frozen_and_the_young_threshold_raised() -> None:
    out = _run("""
        import gc
        import integration_bus.runtime  # a real start-up: the bus's modules
        from integration_bus.heap import YOUNG_THRESHOLD, freeze_startup
        kept = [{"i": i} for i in range(5000)]  # start-up state that lives on
        freeze_startup()
        print(gc.get_freeze_count() >= 5000, gc.get_threshold()[0] == YOUNG_THRESHOLD,
              len(gc.get_objects(2)) < 1000)
    """)
    assert out == "True True True"


def test_cycles_made_after_start_up_are_still_collected() -> None:
    out = _run("""
        import gc, weakref
        from integration_bus.heap import freeze_startup
        freeze_startup()
        class Node:
            pass
        gone = []
        for _ in range(3):
            a, b = Node(), Node()
            a.other, b.other = b, a  # a cycle: only the collector frees it
            weakref.finalize(a, gone.append, 1)
            del a, b
        gc.collect()
        print(len(gone))
    """)
    assert out == "3"
