"""Loading ``config/``: ``bus.yaml`` with line numbers, env interpolation and typed errors."""

from integration_bus.settings.loader import CONFIG_FILE, Config, ConfigErrors, Instance, load_config
from integration_bus.settings.models import BusSettings, RetryPolicy, RouteSettings

__all__ = [
    "CONFIG_FILE",
    "BusSettings",
    "Config",
    "ConfigErrors",
    "Instance",
    "RetryPolicy",
    "RouteSettings",
    "load_config",
]
