"""Streaming line splitting over bytes: any line ending, bounded memory, resumable by offset.

``\\r\\n``, ``\\n`` and a lone ``\\r`` each end a line (old tills still write bare CRs); a final
line without an ending counts too. Memory holds one read chunk plus one partial line, and a line
longer than ``max_length`` bytes is a :class:`FileStructureError` at once, so a file with no line
breaks at all cannot exhaust memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO

from connectors.pos_file.errors import FileStructureError

__all__ = ["CHUNK_BYTES", "read_lines"]

CHUNK_BYTES = 1 << 20

RawLine = tuple[int, int, bytes]
"""(line number, byte offset just after the line and its ending, line bytes without ending)."""


def read_lines(handle: BinaryIO, *, offset: int = 0, number: int = 0,
               max_length: int = 65_536, chunk_bytes: int = CHUNK_BYTES,
               observe: Callable[[bytes], None] | None = None,
               file: str | None = None) -> Iterator[RawLine]:
    """Yield the lines of ``handle`` from byte ``offset`` (a line start), numbering from
    ``number + 1``. ``observe`` sees every chunk read (e.g. a hash). Raises FileStructureError
    for an over-long line (naming ``file`` and the line)."""
    handle.seek(offset)
    pending = b""
    position = offset
    while True:
        chunk = handle.read(chunk_bytes)
        if not chunk:
            break
        if observe is not None:
            observe(chunk)
        parts = (pending + chunk if pending else chunk).splitlines(keepends=True)
        last = parts[-1]
        # a trailing "\r" may be the first half of "\r\n" split across chunks: keep it back
        pending = b"" if last.endswith(b"\n") else parts.pop()
        for part in parts:
            number += 1
            position += len(part)
            body = part[:-2] if part.endswith(b"\r\n") else part[:-1]
            if len(body) > max_length:
                raise _too_long(file, number, max_length)
            yield number, position, body
        if len(pending) > max_length + 1:
            raise _too_long(file, number + 1, max_length)
    if pending:
        number += 1
        position += len(pending)
        body = pending[:-1] if pending.endswith(b"\r") else pending
        if len(body) > max_length:
            raise _too_long(file, number, max_length)
        yield number, position, body


def _too_long(file: str | None, line: int, max_length: int) -> FileStructureError:
    return FileStructureError(f"line is longer than {max_length} bytes (is this the right "
                              "layout, or a binary file?)", file=file, line=line)
