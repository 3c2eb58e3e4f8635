"""``example_files``: JSON files in (source), JSON files out (sink) — an example plugin.

Registered under the entry-point group ``integration_bus.connectors`` (see pyproject.toml), so
``connector: example_files`` works in ``bus.yaml`` once the package is installed. It imports
only the public connector API, ``integration_bus.connector``.
"""

from __future__ import annotations

from integration_bus.connector import ConnectorPlugin

from bus_example_files.config import FilesSinkConfig, FilesSourceConfig
from bus_example_files.sink import FilesSink
from bus_example_files.source import FilesSource

__all__ = ["FilesSink", "FilesSinkConfig", "FilesSource", "FilesSourceConfig", "plugin"]

plugin = ConnectorPlugin(
    name="example_files",
    summary="source: one envelope per JSON file dropped in a folder; "
            "sink: one JSON file per envelope (lookup by idempotency key)",
    source_config=FilesSourceConfig,
    create_source=FilesSource,
    sink_config=FilesSinkConfig,
    create_sink=FilesSink,
)
