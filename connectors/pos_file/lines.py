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

__all__ = ["CHUNK_BYTES", "read_lines", "read_records"]

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


def read_records(handle: BinaryIO, record_length: int, *, offset: int = 0, number: int = 0,
                 chunk_bytes: int = CHUNK_BYTES, observe: Callable[[bytes], None] | None = None,
                 file: str | None = None) -> Iterator[RawLine]:
    """Yield the fixed-length records of ``handle`` from byte ``offset`` (a record start),
    numbered from ``number + 1`` (the "line" of errors), like :func:`read_lines`.

    A file either separates its records with line breaks (a record then ends at its line
    break, and one trimmed of trailing blanks is shorter) or writes them back to back without
    any (one long line, as many bank systems send them; a final line break is allowed). The
    first record read decides which; mixing the two, a line longer than a record, or a last
    record cut short in a file without line breaks is a :class:`FileStructureError`. Memory
    holds one read chunk.
    """
    handle.seek(offset)
    data, at = b"", 0  # data[at:] is read but not yet yielded
    position = offset
    separated: bool | None = None
    eof = False
    need = record_length + 3  # a record, a CRLF and one byte beyond it
    while True:
        if not eof and len(data) - at < need:
            chunk = handle.read(max(chunk_bytes, need))
            if chunk:
                if observe is not None:
                    observe(chunk)
                data, at = data[at:] + chunk, 0
                continue
            eof = True
        if at >= len(data):
            return
        end = min(at + record_length, len(data))
        cut = _first_break(data, at, end)
        if separated is False and (cut >= 0 or end - at < record_length):
            core = data[at:].rstrip(b"\r\n")
            if eof and not core:
                return  # the line break that ends a file without line breaks
            if eof and _first_break(core, 0, len(core)) < 0:
                raise FileStructureError(
                    f"the last record is {len(core)} bytes, records are {record_length}: the "
                    "file is cut short", file=file, line=number + 1, column=len(core) + 1)
            raise _mixed(file, number + 1)
        if cut >= 0:  # a line (possibly trimmed) of a file with line breaks
            separated, body = True, data[at:cut]
            ending = 2 if data[cut:cut + 2] == b"\r\n" else 1
        else:
            body = data[at:end]
            follows = data[end:end + 1]
            ending = 0
            if follows in (b"\r", b"\n"):
                ending = 2 if data[end:end + 2] == b"\r\n" else 1
                if separated is None:
                    separated = True
                elif separated is False and data[end + ending:end + ending + 1]:
                    raise _mixed(file, number + 2)
            elif follows:
                if separated:
                    raise FileStructureError(
                        f"the line is longer than the record length {record_length}",
                        file=file, line=number + 1, column=record_length + 1)
                separated = False
        number += 1
        at += len(body) + ending
        position += len(body) + ending
        yield number, position, body


def _first_break(data: bytes, start: int, end: int) -> int:
    found = [i for i in (data.find(b"\r", start, end), data.find(b"\n", start, end)) if i >= 0]
    return min(found) if found else -1


def _mixed(file: str | None, record: int) -> FileStructureError:
    return FileStructureError("a line break in a file whose records have none (or the other "
                              "way round): the file mixes the two forms", file=file,
                              line=record)
