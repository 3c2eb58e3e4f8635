"""Where an inbox's work folders may live, checked at start-up (a ConfigError naming the field).

The work root is outside every inbox (tills can write an inbox, so anything inside it can be
swapped under the bus), does not hold an inbox, is on the inbox's file system (claims and
archives are atomic renames), is a real folder (not a link) owned by the bus's user, and neither
it nor the folder holding it is writable by every user or by the inbox's group when other
accounts share that group. What cannot be checked this way (ACLs, a share's own permissions) is
the operator's part: docs/pos-file.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from connectors.pos_file.folders import unsafe_reason
from integration_bus.connector import ConfigError

__all__ = ["Placement", "check_placements", "default_work_root"]


@dataclass(frozen=True)
class Placement:
    """One inbox (its real path) and the work root chosen for it; ``index`` names the field."""

    index: int
    inbox: Path
    work: Path
    configured: bool


def default_work_root(inbox: Path) -> Path:
    """``<inbox>.work`` beside the inbox."""
    return inbox.parent / f"{inbox.name}.work"


def _absolute(path: Path) -> Path:
    """Real parents, the last component kept as it is (so a link there is seen, not followed)."""
    return Path(os.path.realpath(path.parent)) / path.name


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_placements(placements: Sequence[Placement]) -> None:
    """Raise ConfigError for the first work root that may not be used."""
    roots: dict[Path, int] = {}
    for p in placements:
        field = f"inboxes[{p.index}].work" if p.configured else f"inboxes[{p.index}].path"
        work = _absolute(p.work)
        for other in placements:
            if _within(work, other.inbox):
                raise ConfigError(f"work folder {work} is inside the inbox {other.inbox}: tills "
                                  "could swap it", field=field,
                                  hint="put it beside the inbox, e.g. "
                                       f"{default_work_root(other.inbox)}")
            if _within(other.inbox, work):
                raise ConfigError(f"work folder {work} holds the inbox {other.inbox}",
                                  field=field, hint="give each its own folder, side by side")
        if work in roots:
            raise ConfigError(f"work folder {work} is used by inboxes[{roots[work]}] too",
                              field=field, hint="one work folder per inbox")
        roots[work] = p.index
        _check_folder(p, work, field)


def _check_folder(p: Placement, work: Path, field: str) -> None:
    inbox_st = os.stat(p.inbox)
    try:
        st = os.lstat(work)
        where, problem = work, unsafe_reason(st, inbox_st.st_gid)
    except FileNotFoundError:
        try:
            st = os.stat(work.parent)
        except FileNotFoundError:
            raise ConfigError(f"work folder {work}: its parent {work.parent} does not exist",
                              field=field, hint="create it") from None
        where, problem = work.parent, unsafe_reason(st, inbox_st.st_gid, parent=True)
    if problem is None and where == work:  # the folder holding it must not be open either
        parent_st = os.stat(work.parent)
        where, problem = work.parent, unsafe_reason(parent_st, inbox_st.st_gid, parent=True)
    if problem is not None:
        raise ConfigError(f"work folder {work}: {where} {problem}", field=field,
                          hint="the tills must not be able to write the work folders or the "
                               "folder holding them: chmod/chown it, or choose another "
                               f"'work' for inboxes[{p.index}]")
    if st.st_dev != inbox_st.st_dev:
        raise ConfigError(f"work folder {work} is on another file system than the inbox "
                          f"{p.inbox}: files move by rename", field=field,
                          hint=f"set inboxes[{p.index}].work to a folder on the inbox's file "
                               "system, outside the inbox")
