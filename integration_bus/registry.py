"""The connector registry: plugins by name, loaded from entry points when asked (never at import).

Built-in connectors register through the same entry-point group as third-party ones, so a plugin
installed from elsewhere has exactly the powers of a built-in one.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points

from integration_bus.connector import ConnectorPlugin
from integration_bus.errors import ConfigError, did_you_mean

__all__ = ["ENTRY_POINT_GROUP", "Registry"]

ENTRY_POINT_GROUP = "integration_bus.connectors"


class Registry:
    """Connector plugins by name. A test builds its own with the plugins it needs."""

    def __init__(self, plugins: Iterable[ConnectorPlugin] = ()) -> None:
        self._plugins: dict[str, ConnectorPlugin] = {}
        for plugin in plugins:
            self.add(plugin)

    @classmethod
    def from_entry_points(cls) -> Registry:
        """Load every plugin of the ``integration_bus.connectors`` group.

        Raises ConfigError naming the entry point when one does not load or is not a plugin.
        """
        registry = cls()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party package must name itself
                raise ConfigError(f"connector plugin {ep.name!r} ({ep.value}) failed to load: "
                                  f"{exc}") from exc
            if not isinstance(plugin, ConnectorPlugin):
                raise ConfigError(f"entry point {ep.name!r} ({ep.value}) is not a "
                                  "ConnectorPlugin")
            registry.add(plugin)
        return registry

    def add(self, plugin: ConnectorPlugin) -> None:
        if plugin.name in self._plugins:
            raise ConfigError(f"two connector plugins are named {plugin.name!r}")
        self._plugins[plugin.name] = plugin

    def get(self, name: str) -> ConnectorPlugin:
        """The plugin called ``name``; ConfigError with a did-you-mean otherwise."""
        try:
            return self._plugins[name]
        except KeyError:
            raise ConfigError(f"unknown connector {name!r}",
                              hint=did_you_mean(name, self._plugins)) from None

    def names(self) -> list[str]:
        return sorted(self._plugins)

    def __contains__(self, name: object) -> bool:
        return name in self._plugins
