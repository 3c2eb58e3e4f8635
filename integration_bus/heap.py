"""The garbage collector tuned for a long-running bus process (a worker, a source).

Two things made the collector a large cost on the hot paths (docs/benchmarks.md has the
figures):

- **Start-up's objects.** Before it handles a message, a process has imported a few hundred
  modules, loaded its config and plugins and connected: some 130,000 objects that live as long
  as it does, and that every full collection walked. A POS file of 100,000 lines ran 11 full
  collections at 67 ms each, every thread stopped meanwhile. :func:`freeze_startup` collects
  once, then moves what is left to the permanent generation (``gc.freeze``): later full
  collections walk only what the work itself allocates.
- **Work in flight.** A window of 1,000 envelopes or a batch of 100 messages is tens of
  thousands of container objects that all live until it is confirmed, then all die. With the
  default threshold (700 net new objects) a collection of the youngest generation ran at every
  rise, promoting the live window to the older generations to be walked again there (1,272
  young and 115 middle collections for that file). A threshold of :data:`YOUNG_THRESHOLD` lets a
  window come and go between two collections (90 young and 8 middle for the same file).

Cyclic garbage is reclaimed as before, a little later; what start-up left behind that later
becomes garbage in a cycle is not (start-up's objects are modules, settings and connections
that stay).
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "freeze_startup"]

YOUNG_THRESHOLD = 10_000  # net new container objects between two young collections


def freeze_startup() -> None:
    """Call once a long-running command has started up, before its main loop."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(max(_young, YOUNG_THRESHOLD), middle, old)
