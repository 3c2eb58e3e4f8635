"""The machine's load average, for every bench's output: the rates a bench prints depend on the
other work the 2 cores had, so each one states it at its start and its end."""

from __future__ import annotations

import os


def load_line(when: str) -> str:
    """``load average at <when>: <1 min> <5 min> <15 min>`` from ``os.getloadavg()``."""
    one, five, fifteen = os.getloadavg()
    return f"load average at {when}: {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"
