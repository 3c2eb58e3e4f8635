"""Readiness: when a file in an inbox counts as completely written, per policy.

- ``rename``: the writer writes under a temp name (``temp_patterns``: never read) and renames
  into place; a file under its final name is ready at once.
- ``marker``: ready once ``NAME + marker_suffix`` exists as a regular file at least as new as
  the data file (a stale marker from an earlier file does not count).
- ``stable``: size, mtime and inode unchanged for ``stable_polls`` observations taken at least a
  poll interval apart, and the last modification at least ``min_age`` old. This is the only
  choice for writers that cannot rename; on network mounts whose attribute caches lag, prefer
  the other two (no policy can see a writer that pauses longer than ``min_age``).
"""

from __future__ import annotations

import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from connectors.pos_file.config import ReadinessConfig
from connectors.pos_file.inbox import Listed, matches

__all__ = ["Readiness"]


@dataclass
class _Seen:
    identity: tuple[int, int, int]
    stable: int
    polled_at: float


class Readiness:
    """Tracks candidate files across polls. Not thread-safe (the source's loop owns it)."""

    def __init__(self, config: ReadinessConfig, *, poll_interval: float,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._poll = poll_interval
        self._clock, self._monotonic = clock, monotonic
        self._seen: dict[tuple[str, str], _Seen] = {}

    @property
    def policy(self) -> str:
        return self.config.policy

    def ignored(self, name: str) -> bool:
        """Temp names and markers are never data files."""
        if matches(name, self.config.temp_patterns):
            return True
        return self.config.policy == "marker" and name.endswith(self.config.marker_suffix)

    def marker_name(self, name: str) -> str:
        return name + self.config.marker_suffix

    def data_name(self, marker: str) -> str | None:
        suffix = self.config.marker_suffix
        return marker[:-len(suffix)] if marker.endswith(suffix) and marker != suffix else None

    def ready(self, entry: Listed) -> bool:
        """Is ``entry`` completely written? (Call once per poll for ``stable``.)"""
        if self.config.policy == "rename":
            return True
        if self.config.policy == "marker":
            return self._marker_ready(entry)
        return self._stable(entry)

    def forget(self, entry: Listed) -> None:
        self._seen.pop((str(entry.inbox.path), entry.name), None)

    def waiting(self) -> int:
        """Files observed but not yet ready (the loop polls faster while there are some)."""
        return len(self._seen)

    def _marker_ready(self, entry: Listed) -> bool:
        marker = entry.inbox.folder.lstat(self.marker_name(entry.name))
        if marker is None:
            return False
        return stat.S_ISREG(marker.st_mode) and marker.st_mtime_ns >= entry.st.st_mtime_ns

    def _stable(self, entry: Listed) -> bool:
        key = (str(entry.inbox.path), entry.name)
        identity = (entry.st.st_ino, entry.st.st_size, entry.st.st_mtime_ns)
        now = self._monotonic()
        seen = self._seen.get(key)
        if seen is None or seen.identity != identity:
            self._seen[key] = _Seen(identity, 1, now)
            return False
        if now - seen.polled_at >= self._poll * 0.9:  # an event-driven look is not a poll
            seen.stable += 1
            seen.polled_at = now
        old_enough = self._clock() - entry.st.st_mtime >= self.config.min_age / 1000
        if seen.stable >= self.config.stable_polls and old_enough:
            del self._seen[key]
            return True
        return False
