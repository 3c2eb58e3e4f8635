"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): the functions that take the
most samples, by self time (the frame on top of the stack) and by total time (anywhere on it).

    py-spy record --subprocesses --nolineno --format raw -o prof.txt -- \\
        .venv/bin/python bench/hub.py --quick
    python bench/pyspy_top.py prof.txt --process=--child [--top 15]

``--process`` keeps only the stacks of processes whose command line contains the text (with
``--subprocesses`` py-spy roots each stack in ``process <pid>:"<command line>"`` frames, the
parent's first, then the child's);
``--child`` selects the worker process that ``bench/hub.py`` starts. Samples of idle threads
(waiting on a socket, a lock, a sleep) are not in a py-spy profile unless it ran with ``--idle``,
so the percentages are of the time the process was on a CPU.

A profile recorded with ``--threads`` (and ``--idle``, to see waits) names each stack's thread:
``--threads`` then prints the samples per thread, and ``--thread=lane:bench`` keeps the threads
whose name has the text (a worker's lane threads are ``lane:<lane>``, its sink threads
``sink:<lane>:<sink>_N``).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# frames on nearly every stack, left out of the totals: thread start-up and the executor loop
PLUMBING = ("(threading.py)", "(concurrent/futures/thread.py)")
SITE = re.compile(r"\(.*?(?:site-packages|lib/python3\.\d+)/")


def short(frame: str) -> str:
    """``send (amqp/transport.py)`` instead of the full path."""
    frame = SITE.sub("(", frame)
    return re.sub(r"\(/[^)]*/(integration_bus|connectors|bench)/", r"(\1/", frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--process", default="", help="keep processes whose command line has this")
    parser.add_argument("--thread", default="", help="keep threads whose name has this")
    parser.add_argument("--threads", action="store_true", help="print samples per thread")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    per_thread: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        procs = [f for f in frames if f.startswith("process ")]  # parent first, then child
        if args.process and not (procs and args.process in procs[-1]):
            continue
        thread = next((f for f in frames if f.startswith("thread ")), "")
        if args.thread and args.thread not in thread:
            continue
        frames = [short(f) for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        n = int(count)
        samples += n
        per_thread[thread.partition(": ")[2] or thread] += n
        own[frames[-1]] += n
        for frame in set(frames) - set(frames[:1]):
            if not frame.endswith(PLUMBING):
                total[frame] += n
    print(f"{samples} samples" + ("" if args.thread or args.threads else " on a CPU"))
    if args.threads:
        for name, n in per_thread.most_common():
            print(f"{100 * n / max(samples, 1):5.1f}%  {name}")
    titles = ("self", "total (self + callees; thread plumbing left out)")
    for title, counter in zip(titles, (own, total), strict=True):
        print(f"\ntop {args.top} by {title}:")
        for frame, n in counter.most_common(args.top):
            print(f"{100 * n / max(samples, 1):5.1f}%  {frame}")


if __name__ == "__main__":
    main()
