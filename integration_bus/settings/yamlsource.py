"""bus.yaml as plain data plus positions, read by the one safe reader (``yamlsafe``).

Unquoted non-integer numbers are read as Decimals (never binary floats), anchors, aliases, custom
tags, duplicate keys and oversized files are refused with ``file:line:col``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integration_bus.errors import ConfigError
from integration_bus.yamlsafe import Locator, read_yaml

__all__ = ["Located", "Path_", "load_yaml"]

Path_ = tuple[str | int, ...]


@dataclass
class Located:
    """Loaded YAML: ``data`` (plain dicts, lists, scalars) and where each value came from."""

    file: Path
    data: Any
    locator: Locator

    def error(self, path: Path_, message: str, *, hint: str | None = None,
              value: bool = True) -> ConfigError:
        """A ConfigError at ``path``: its value, or (``value=False``) its key."""
        return self.locator.error(message, path, key=not value, hint=hint)


def load_yaml(file: Path) -> Located:
    """Read ``file`` safely; raises ConfigError naming file:line:col."""
    if not file.exists():
        raise ConfigError("file not found", file=str(file),
                          hint="pass --config-dir (or BUS_CONFIG_DIR) pointing at the folder "
                               "that holds bus.yaml")
    data, locator = read_yaml(file, decimals=True)
    return Located(file=file, data=data, locator=locator)
