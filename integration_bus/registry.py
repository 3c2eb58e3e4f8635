"""The connector registry: plugins by name, loaded from entry points when asked (never at import).

Built-in connectors register through the same entry-point group as third-party ones, so a plugin
installed from elsewhere has exactly the powers of a built-in one.

An entry point names either a :class:`ConnectorPlugin` (a plugin without state of its own) or a
:data:`PluginFactory`, a function without arguments returning a fresh one: a plugin whose
instances share something (HTTP pacers, circuit breakers, parsed WSDLs) keeps it in the objects
its factory builds, never in a module. Every :class:`~integration_bus.runtime.Bus` takes its own
plugins from its registry with :meth:`Registry.fresh`, so two buses in one process share no
plugin state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib.metadata import entry_points

from integration_bus.connector import ConnectorPlugin
from integration_bus.errors import ConfigError, did_you_mean

__all__ = ["ENTRY_POINT_GROUP", "PluginFactory", "Registry"]

ENTRY_POINT_GROUP = "integration_bus.connectors"

#: builds a fresh plugin (with fresh shared state) each call; registered by entry point
PluginFactory = Callable[[], ConnectorPlugin]


class Registry:
    """Connector plugins by name. A test builds its own with the plugins it needs.

    A plugin added as an object is used as it is by every bus given this registry; a plugin
    added as a factory is built once here (its name and config models) and again for each
    bus (:meth:`fresh`).
    """

    def __init__(self, plugins: Iterable[ConnectorPlugin | PluginFactory] = ()) -> None:
        self._plugins: dict[str, ConnectorPlugin] = {}
        self._factories: dict[str, PluginFactory] = {}
        for plugin in plugins:
            self.add(plugin)

    @classmethod
    def from_entry_points(cls) -> Registry:
        """Load every plugin of the ``integration_bus.connectors`` group.

        Raises ConfigError naming the entry point when one does not load, or is neither a
        plugin nor a factory returning one.
        """
        registry = cls()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = ep.load()
            except Exception as exc:  # a broken third-party package must name itself
                raise ConfigError(f"connector plugin {ep.name!r} ({ep.value}) failed to load: "
                                  f"{exc}") from exc
            if not isinstance(loaded, ConnectorPlugin) and not callable(loaded):
                raise ConfigError(f"entry point {ep.name!r} ({ep.value}) is not a "
                                  "ConnectorPlugin or a function returning one")
            registry.add(loaded, origin=f"entry point {ep.name!r} ({ep.value})")
        return registry

    def add(self, plugin: ConnectorPlugin | PluginFactory, *, origin: str = "") -> None:
        """Add a plugin, or a factory (called now, and again by :meth:`fresh`).

        Raises ConfigError when the name is taken or a factory does not return a plugin."""
        factory = None if isinstance(plugin, ConnectorPlugin) else plugin
        built = _build(plugin, origin)
        if built.name in self._plugins:
            raise ConfigError(f"two connector plugins are named {built.name!r}")
        self._plugins[built.name] = built
        if factory is not None:
            self._factories[built.name] = factory

    def replaced(self, *plugins: ConnectorPlugin | PluginFactory) -> Registry:
        """A new registry: these plugins plus this one's others (same-named ones replaced)."""
        mine = {_build(p, "").name for p in plugins}
        kept = [self._factories.get(n, self._plugins[n]) for n in self.names() if n not in mine]
        return Registry([*kept, *plugins])

    def fresh(self) -> Registry:
        """A registry of the same plugins, those registered by factory built anew: what one
        bus uses, so its breakers, pacers and caches are its own."""
        return Registry(self._factories.get(n, self._plugins[n]) for n in self.names())

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


def _build(plugin: ConnectorPlugin | PluginFactory, origin: str) -> ConnectorPlugin:
    if isinstance(plugin, ConnectorPlugin):
        return plugin
    where = origin or getattr(plugin, "__qualname__", repr(plugin))
    try:
        built = plugin()
    except ConfigError:
        raise
    except Exception as exc:  # a broken third-party factory must name itself
        raise ConfigError(f"{where} failed to build its plugin: {exc}") from exc
    if not isinstance(built, ConnectorPlugin):
        raise ConfigError(f"{where} returned {type(built).__name__}, not a ConnectorPlugin")
    return built
