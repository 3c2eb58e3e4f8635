"""The test kit: a bus running in threads, contract suites for plugins, waiting helpers.

For the tests of the bus and of third-party connector plugins (it needs pytest)::

    from integration_bus.testing import SinkContract, bus_running, open_bus

- :func:`open_bus` / :func:`bus_running` / :class:`RunningBus`: a bus from a config dir or the
  text of a ``bus.yaml`` (embedded mode or RabbitMQ, as the config says), its sources, relay
  and workers in threads; :meth:`RunningBus.join` waits until the bus is idle and re-raises
  the error of the first dead-lettered message (``fail_fast``).
- :class:`SinkContract`, :class:`SourceContract`, :class:`TransportContract`: pytest suites a
  test class subclasses, providing a few fixtures; every built-in connector and both
  transports pass them.
- :class:`ContractBus`: the real embedded bus the contract suites build plugins on (its
  publishing can be made to fail on cue).
- :func:`wait_for`, :func:`running`: a condition with a deadline; a loop in a thread.

The pytest plugin :mod:`integration_bus.testing.pytest_plugin` (loaded automatically where
integration-bus is installed) adds the ``running_bus`` and ``contract_bus`` fixtures. The names
here are loaded on first use, so that plugin costs a pytest run nothing until a test uses the
kit.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from integration_bus.testing.contract_bus import ContractBus, PublishGate
    from integration_bus.testing.harness import (
        DeadLettered,
        RunningBus,
        bus_running,
        open_bus,
        write_config,
    )
    from integration_bus.testing.pytest_plugin import StartBus
    from integration_bus.testing.sink_contract import (
        EffectCount,
        EnvelopeFactory,
        SinkContract,
        SinkFactory,
    )
    from integration_bus.testing.source_contract import (
        AckCount,
        Feed,
        SourceContract,
        SourceFactory,
    )
    from integration_bus.testing.threads import running
    from integration_bus.testing.transport_contract import TransportContract
    from integration_bus.testing.waiting import wait_for

__all__ = [
    "AckCount",
    "ContractBus",
    "DeadLettered",
    "EffectCount",
    "EnvelopeFactory",
    "Feed",
    "PublishGate",
    "RunningBus",
    "SinkContract",
    "SinkFactory",
    "SourceContract",
    "SourceFactory",
    "StartBus",
    "TransportContract",
    "bus_running",
    "open_bus",
    "running",
    "wait_for",
    "write_config",
]


_HOMES = {
    "ContractBus": "contract_bus", "PublishGate": "contract_bus",
    "DeadLettered": "harness", "RunningBus": "harness", "bus_running": "harness",
    "open_bus": "harness", "write_config": "harness",
    "EffectCount": "sink_contract", "EnvelopeFactory": "sink_contract",
    "SinkContract": "sink_contract", "SinkFactory": "sink_contract",
    "AckCount": "source_contract", "Feed": "source_contract",
    "SourceContract": "source_contract", "SourceFactory": "source_contract",
    "StartBus": "pytest_plugin", "running": "threads",
    "TransportContract": "transport_contract", "wait_for": "waiting",
}


def __getattr__(name: str) -> Any:
    """The kit's names, each imported from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
