"""The POS file connector's errors, placed in the bus's one tree by what the runtime should do::

    PermanentError (integration_bus.connector)
    ├── ParseError              a line or a file does not match its layout; names file:line:column
    │   ├── FileStructureError  header/trailer missing or misplaced, a line too long, a bad
    │   │                       column-header row, too many bad records
    │   └── ControlTotalError   a trailer count or amount sum disagrees with the detail records
    ├── RenderError             a record cannot be written in its layout (sink side)
    └── RefusedEntry            an inbox entry that is never read, with a typed reason: symlink,
                                hardlink, not_regular (FIFO, device, folder), bad_name, empty,
                                too_large, sparse, truncated, replaced, permission_denied,
                                unreadable
    ConfigError
    └── LayoutError             a layout file is wrong (file:line:col: field: problem)

Every error carries where it happened (``file``, ``line``, ``column``, ``field``) in its context,
so ``str(error)`` reads ``DAILY_0042.DAT:17:23: ... (field=amount)``.
"""

from __future__ import annotations

from typing import Any, Literal

from integration_bus.connector import ConfigError, PermanentError

__all__ = [
    "ControlTotalError",
    "FileStructureError",
    "LayoutError",
    "ParseError",
    "RefusalReason",
    "RefusedEntry",
    "RenderError",
]


class ParseError(PermanentError):
    """Input that does not match its layout. Retrying cannot help."""


class FileStructureError(ParseError):
    """The file as a whole is malformed (not one line of it): it is quarantined, never published."""


class ControlTotalError(ParseError):
    """The trailer's control totals disagree with the detail records: the file is quarantined."""


class RenderError(PermanentError):
    """A record that its layout cannot represent (too long, wrong type, line break in a value)."""


class LayoutError(ConfigError):
    """A layout file is invalid; raised at start-up, never at message time."""


RefusalReason = Literal["symlink", "hardlink", "not_regular", "bad_name", "empty", "too_large",
                        "sparse", "truncated", "replaced", "permission_denied", "unreadable",
                        "changed"]


class RefusedEntry(PermanentError):
    """An inbox entry the source will not read. ``reason`` says why, in one word."""

    def __init__(self, message: str, *, reason: RefusalReason, **context: Any) -> None:
        super().__init__(message, reason=reason, **context)
        self.reason: RefusalReason = reason
