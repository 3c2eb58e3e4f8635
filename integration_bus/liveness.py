"""Who holds a claim, and is it still alive: process identity = host + pid + start time.

A claim (an outbox row a relay is publishing, a poll lease) names its holder by
:func:`process_identity` plus whatever the holder adds after a ``:`` (a thread, a nonce).
:func:`holder_alive` answers False only when it *knows* the holder is gone: a process on this
host whose pid no longer runs, or runs with another start time (the pid was reused). A holder
on another host, or written in an older format, is assumed alive: only its lease can free it.

The start time is the process's ``starttime`` from ``/proc/<pid>/stat`` (clock ticks since
boot, Linux); where there is no ``/proc`` it is ``0`` and only the pid is checked.
"""

from __future__ import annotations

import functools
import os
import socket

__all__ = ["holder_alive", "process_identity", "start_time"]

_HOST_CHARS = 30  # identities fit a 64-character column with pid, start time and a suffix


def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot); None if it does not run;
    0 when this system cannot say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else _pid_running(pid)
    except OSError:
        return 0
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = data[data.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None  # a zombie (killed, not yet reaped by its parent) runs no more
    return int(fields[19])  # field 22 of the whole line


def _pid_running(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0
    return 0


def _host() -> str:
    return socket.gethostname().replace(":", "_")[:_HOST_CHARS]


@functools.cache
def _identity(pid: int) -> str:
    return f"{_host()}:{pid}:{start_time(pid) or 0}"


def process_identity() -> str:
    """``host:pid:start`` of this process (recomputed after a fork: the pid is part of it)."""
    return _identity(os.getpid())


def holder_alive(holder: str) -> bool:
    """False when ``holder`` (``host:pid:start[:...]``) is known to be dead: a process of this
    host that no longer runs, or whose pid now belongs to a process started at another time."""
    host, pid_text, start_text, *_ = (*holder.split(":"), "", "")
    if host != _host() or not pid_text.isdigit():
        return True
    started = start_time(int(pid_text))
    if started is None:
        return False
    if not start_text.isdigit() or not started or not int(start_text):
        return True  # an old-format holder, or a system without start times: pid only
    return started == int(start_text)
