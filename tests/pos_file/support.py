"""Helpers for the pos_file tests: a bus on a fresh RabbitMQ vhost with a ``pos_file`` source, a
probe sink behind a route, and ways to look at what happened (journal, ledger, folders)."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import struct
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from connectors.pos_file import PosFileSource
from connectors.pos_file import plugin as pos_plugin
from connectors.pos_file.layout_file import load_layout
from connectors.pos_file.ledger import FileEntry, FileLedger
from connectors.pos_file.parser import Layout
from connectors.pos_file.windows import Checkpoint
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from integration_bus.store.schema import journal
from tests.support.probe import Target, probe_plugin, registry_with, running

REPO = Path(__file__).resolve().parents[2]
LAYOUTS = REPO / "config" / "layouts"
DAILY = LAYOUTS / "daily_sales.yaml"


def daily_layout() -> Layout:
    return load_layout(DAILY)


def source_yaml(name: str = "tills", *, inbox: str = "inbox", extra: str = "") -> str:
    """A pos_file source on ``inbox`` reading the shipped daily_sales layout, fast timings."""
    body = f"""
    {name}:
      connector: pos_file
      inboxes: [{{path: {inbox}}}]
      layout: {DAILY}
      pattern: "*.DAT"
      store_pattern: 'SALES_(?P<store>\\d{{4}})_'
      rescan_interval: 500ms
      poll_interval: 50ms
      node: node-a
    """
    extras = [line for line in textwrap.dedent(extra).strip("\n").splitlines() if line]
    overridden = {line.split(":", 1)[0] for line in extras}
    lines = [line for line in textwrap.dedent(body).strip("\n").splitlines()
             if line.strip().split(":", 1)[0] not in overridden or not line.startswith("  ")]
    lines += [f"  {line}" for line in extras]
    return "\n".join("  " + line for line in lines)


def write_bus_config(root: Path, url: str, *, sources: str, routes: str | None = None) -> Path:
    config_dir = root / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    routes = routes or """
  sales:
    from: [pos.sale_line]
    to: [target]"""
    text = f"""broker: {{url: "{url}", prefetch: 200, batch_size: 100}}
store: {{url: sqlite:///var/bus.db}}
sources:
{sources}
sinks:
  target: {{connector: probe}}
routes:{routes}
"""
    (config_dir / "bus.yaml").write_text(text)
    return config_dir


@dataclass
class PosBus:
    """A bus whose route ``sales`` delivers pos.sale_line envelopes into ``target``."""

    root: Path
    bus: Bus
    target: Target
    registry: Registry
    threads: list[threading.Thread] = field(default_factory=list)

    def inbox(self, name: str = "inbox") -> Path:
        return self.root / name

    def work(self, inbox: str = "inbox") -> Path:
        """The inbox's work folders (processing/, archive/, ...): beside it by default."""
        return self.root / f"{inbox}.work"

    def source(self, name: str = "tills", checkpoint: Checkpoint | None = None,
               clock: Callable[[], float] | None = None) -> PosFileSource:
        instance = self.bus.config.sources[name]
        context = self.bus.context(name)
        if clock is not None:
            context = dataclasses.replace(context, clock=clock)
        if checkpoint is None:
            return PosFileSource(instance.config, context)  # type: ignore[arg-type]
        return PosFileSource(instance.config, context,  # type: ignore[arg-type]
                             checkpoint=checkpoint)

    @contextmanager
    def running_source(self, source: PosFileSource, *,
                       prepare: Callable[[], None] | None = None) -> Iterator[threading.Event]:
        """Run ``source`` in a thread with its own publisher until the block ends
        (``prepare`` first, in that thread)."""
        def body(stop: threading.Event) -> None:
            if prepare is not None:
                prepare()
            publisher = self.bus.publisher()
            try:
                source.run(publisher, stop)
            finally:
                publisher.close()
                source.close()  # its folders' descriptors, as `bus serve` closes it on a stop
        with running(body) as stop:
            yield stop

    @contextmanager
    def running_worker(self) -> Iterator[threading.Event]:
        worker = self.bus.worker()
        with running(worker.run) as stop:
            yield stop

    def queued(self, route: str = "sales") -> int:
        stats = self.bus.transport.queue_stats(f"bus.route.{route}")
        return stats.messages if stats else 0

    def events(self, event: str) -> list[dict[str, Any]]:
        with self.bus.store.db.begin() as conn:
            rows = conn.execute(select(journal.c.detail).where(journal.c.event == event)
                                .order_by(journal.c.id)).all()
        return [dict(r.detail or {}) for r in rows]

    def entry(self, store: str, sha256: str, source: str = "tills") -> FileEntry | None:
        ledger = FileLedger(self.bus.context(source).cursors, "node-a")
        return ledger.get(store, sha256)

    def close(self) -> None:
        self.bus.close()


def open_pos_bus(root: Path, url: str, *, sources: str | None = None,
                 routes: str | None = None, inboxes: tuple[str, ...] = ("inbox",)) -> PosBus:
    for name in inboxes:
        (root / name).mkdir(parents=True, exist_ok=True)
    config_dir = write_bus_config(root, url, sources=sources or source_yaml(), routes=routes)
    target = Target()
    registry = registry_with(pos_plugin, probe_plugin(target))
    bus = Bus(load_config(config_dir, registry, {}), registry=registry).open()
    return PosBus(root=root, bus=bus, target=target, registry=registry)


def drop(inbox: Path, name: str, data: bytes) -> Path:
    """Put a complete file into ``inbox`` the safe way: temp name, then rename into place."""
    temp = inbox / f".{name}.part"
    temp.write_bytes(data)
    os.rename(temp, inbox / name)
    return inbox / name


def files_in(folder: Path, pattern: str = "*") -> list[str]:
    return sorted(p.name for p in folder.glob(pattern) if p.is_file())


IN_ALL_EVENTS = 0xFFF  # access, modify, attrib, close, open, moves, create, delete, self
IN_ACCESS = 0x1
IN_OPEN_OR_READ = 0x21  # IN_OPEN | IN_ACCESS


class InodeWatch:
    """inotify watches on files or folders themselves (their inodes: events arrive whatever
    path or link was used). ``events()`` drains what happened since the last call."""

    def __init__(self, paths: list[Path], mask: int = IN_ALL_EVENTS) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self._fd >= 0, os.strerror(ctypes.get_errno())
        self.names: dict[int, str] = {}
        for path in paths:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask)
            assert wd >= 0, (path, os.strerror(ctypes.get_errno()))
            self.names[wd] = path.name

    def events(self) -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return seen
            offset = 0
            while offset < len(data):
                wd, mask, _, length = struct.unpack_from("iIII", data, offset)
                if mask & IN_ALL_EVENTS:
                    seen.append((self.names.get(wd, "?"), mask))
                offset += 16 + length

    def close(self) -> None:
        os.close(self._fd)


def without_file_permission_override() -> None:
    """Drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the calling thread's effective set.

    Tests may run as root, whom permission bits do not stop; Linux capabilities are per thread,
    so a source thread that calls this first meets the kernel's real permission checks (EACCES
    on a mode-000 file) exactly as a bus running as an ordinary user does. A no-op for a user
    without those capabilities."""
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    assert libc.capget(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())
    data[0].effective &= ~((1 << 1) | (1 << 2))  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    assert libc.capset(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())
