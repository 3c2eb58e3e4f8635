"""integration-bus: retail integration middleware on RabbitMQ.

The public API: :class:`Bus` (the runtime), :class:`Envelope`, the error tree, and the connector
contract in :mod:`integration_bus.connector`.
"""

from integration_bus.envelope import Envelope
from integration_bus.errors import (
    BusError,
    ConfigError,
    MappingError,
    PermanentError,
    TransientError,
    UnroutableError,
)

__all__ = [
    "BusError",
    "ConfigError",
    "Envelope",
    "MappingError",
    "PermanentError",
    "TransientError",
    "UnroutableError",
]
__version__ = "0.2.0"
