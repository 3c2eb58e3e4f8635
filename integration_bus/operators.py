"""Who is acting on dead letters, and what their role lets them do (CLI now, console later).

An :class:`Operator` is a name and a role; the identity is never self-declared: the CLI takes
the OS user running it (:func:`os_operator`), a console brings its own login, the scheduler
acts as the system. Roles come from ``operators:`` in bus.yaml (``OperatorSettings``):

========  ======================================================================
viewer    read dead letters and the audit, masked (list, show, groups, export)
operator  also replay (retry), dry-run, discard and restore, and run a reconcile from the
          console
admin     also edit, unmask, purge and force (reset the ledger on replay), and manage the
          console's users (``bus users``)
========  ======================================================================

:meth:`Operator.require` raises :class:`AccessDenied` (a RequestError: the CLI exits 3) when the
role does not allow an action; callers audit the refusal.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from integration_bus.errors import RequestError
from integration_bus.settings.models import OperatorSettings

__all__ = ["PERMISSIONS", "ROLES", "AccessDenied", "Operator", "os_operator", "role_of"]

ROLES = ("viewer", "operator", "admin")

#: action -> the least role that may do it
PERMISSIONS = {
    "read": "viewer", "search": "viewer", "export": "viewer", "audit": "viewer",
    "replay": "operator", "dry-run": "operator", "discard": "operator", "restore": "operator",
    "reconcile": "operator",  # run a stock reconcile now (the console's stock page)
    "edit": "admin", "unmask": "admin", "purge": "admin", "force": "admin",
    "users": "admin",  # add and remove console users (``bus users``)
}


class AccessDenied(RequestError):
    """The operator's role does not allow the action (nothing was done; the refusal is
    audited)."""


@dataclass(frozen=True)
class Operator:
    """Someone acting on dead letters: ``name`` (an OS user, a console login, ``scheduler``),
    ``role`` (viewer, operator, admin or none) and ``via`` (how the identity was
    established: ``os``, ``console``, ``system``)."""

    name: str
    role: str
    via: str = "os"

    @classmethod
    def system(cls, name: str) -> Operator:
        """The bus itself (scheduled purges): an admin."""
        return cls(name, "admin", "system")

    def may(self, action: str) -> bool:
        needed = PERMISSIONS[action]
        return self.role in ROLES and ROLES.index(self.role) >= ROLES.index(needed)

    def require(self, action: str) -> None:
        """Raise AccessDenied unless the role allows ``action`` (a key of PERMISSIONS)."""
        if not self.may(action):
            needed = PERMISSIONS[action]
            raise AccessDenied(
                f"{self.name} ({self.role if self.role in ROLES else 'no role'}) may not "
                f"{action}: it needs the {needed} role",
                hint="roles are given in bus.yaml under operators: users / groups "
                     "(docs/dead-letters.md#roles)")


def os_operator(settings: OperatorSettings, config_file: Path) -> Operator:
    """The OS user running this process, with the role ``settings`` give them."""
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (containers): it has only its number
        name = f"uid:{uid}"
    return Operator(name, role_of(settings, name, _groups(), _owner(config_file) == uid), "os")


def role_of(settings: OperatorSettings, user: str, groups: set[str], owns_config: bool) -> str:
    """The role of ``user`` (see OperatorSettings for the order of the rules)."""
    if user in settings.users:
        return settings.users[user]
    granted = [settings.groups[g] for g in groups if g in settings.groups]
    if granted:
        return max(granted, key=ROLES.index)
    if owns_config and settings.config_owner != "none":
        return settings.config_owner
    return settings.default


def _groups() -> set[str]:
    names = set()
    for gid in {os.getgid(), *os.getgroups()}:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None
