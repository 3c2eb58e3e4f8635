"""What the config models give for free: ``bus lint`` checks an instance's keys (with a
did-you-mean at file:line), and ``bus schema export`` describes them for editors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CONFIG = """\
store: {url: "sqlite:///var/bus.db"}
sources:
  drops: {connector: example_files, folder: var/inbox, type: order.created}
sinks:
  files: {connector: example_files, %s: var/outbox}
routes:
  orders: {from: [order.created], to: [files]}
"""


def bus(*args: str) -> subprocess.CompletedProcess[str]:
    """The ``bus`` command, as an engineer runs it."""
    return subprocess.run([sys.executable, "-m", "integration_bus", *args],
                          capture_output=True, text=True, timeout=120)


def test_bus_lint_checks_the_plugin_config(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "bus.yaml").write_text(CONFIG % "folder")
    fine = bus("lint", "--config-dir", str(tmp_path / "config"))
    assert fine.returncode == 0, fine.stdout + fine.stderr
    (tmp_path / "config" / "bus.yaml").write_text(CONFIG % "foldr")
    typo = bus("lint", "--config-dir", str(tmp_path / "config"))
    assert typo.returncode != 0
    assert "bus.yaml:5:" in typo.stderr and "'folder'" in typo.stderr, typo.stderr


def test_bus_schema_export_describes_the_plugin(tmp_path: Path) -> None:
    exported = bus("schema", "export", str(tmp_path))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    schema = json.loads((tmp_path / "bus.schema.json").read_text())
    sinks = schema["$defs"]["SinkInstance"]["oneOf"]
    (ours,) = [s for s in sinks if s["properties"]["connector"].get("const") == "example_files"]
    assert "folder" in ours["required"]
    assert "one JSON file per envelope" in ours["properties"]["folder"]["description"]
