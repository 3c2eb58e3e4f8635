"""``pos_file``: POS flat files in and out.

Source: watched inbox folders (inotify or polling, plus periodic rescans), readiness policies
(rename, done marker, stable size+mtime), claim by atomic rename, layout-driven streaming parse
(fixed width or delimited, header/detail/trailer, control totals), one envelope per detail record
published with windowed confirms, a crash-safe file ledger, duplicates moved aside, hostile
entries refused, and an expected-file calendar. Sink: layout-driven rendering written under a
temp name and renamed into place. ``bus layout try`` tries a layout on a sample file. See
docs/pos-file.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from connectors.pos_file.cli import layout_group
from connectors.pos_file.config import PosFileSinkConfig, PosFileSourceConfig
from connectors.pos_file.layout_file import load_layout
from connectors.pos_file.sink import PosFileSink
from connectors.pos_file.source import PosFileSource
from integration_bus.connector import ConnectorPlugin

__all__ = ["PosFileSink", "PosFileSinkConfig", "PosFileSource", "PosFileSourceConfig", "plugin"]


def _lint(config: PosFileSourceConfig | PosFileSinkConfig,
          resolve: Callable[[str], Path]) -> None:
    """``bus lint``: the layout an instance names loads (LayoutError at its file:line)."""
    load_layout(resolve(config.layout), field="layout")


plugin = ConnectorPlugin(
    name="pos_file",
    summary="source: POS flat files from watched inboxes (claimed, validated, published with "
            "confirms, archived); sink: layout-rendered files for the POS, renamed into place",
    source_config=PosFileSourceConfig,
    create_source=PosFileSource,
    sink_config=PosFileSinkConfig,
    create_sink=PosFileSink,
    commands=(layout_group,),
    lint=_lint,
)
