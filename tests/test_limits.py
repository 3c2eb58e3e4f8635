"""Hostile sizes and shapes the core must refuse with a typed error instead of crashing or
growing: YAML nested thousands deep, giant failure texts, wrong broker credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.pos_file.errors import LayoutError
from connectors.pos_file.layout_file import load_layout
from integration_bus.errors import ConfigError
from integration_bus.yamlsafe import MAX_DEPTH, read_yaml

DEEP = 5000


def _deep_yaml(style: str) -> str:
    if style == "flow":
        return "name: x\nrecords: " + "[" * DEEP + "]" * DEEP + "\n"
    if style == "block":  # "- - - - x": each dash opens a list
        return "name: x\nrecords:\n  " + "- " * DEEP + "x\n"
    return "name: x\nrecords: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n"


@pytest.mark.parametrize("style", ["flow", "block", "mapping"])
def test_yaml_nested_thousands_deep_is_a_config_error_at_its_line(tmp_path: Path,
                                                                    style: str) -> None:
    # Given a file nested 5,000 levels deep (a RecursionError in the composer before)
    path = tmp_path / "deep.yaml"
    path.write_text(_deep_yaml(style))
    # When it is read, Then a ConfigError names the file, the line and the limit
    with pytest.raises(ConfigError) as caught:
        read_yaml(path)
    error = caught.value
    assert error.context["file"] == str(path)
    assert error.context["line"] in (2, 3)
    assert f"deeper than {MAX_DEPTH}" in str(error)
    # And the POS layout loader, which reads YAML through the same reader, says the same
    with pytest.raises(LayoutError) as layout:
        load_layout(path, field="layout")
    assert f"deeper than {MAX_DEPTH}" in str(layout.value)
    assert layout.value.context["line"] in (2, 3)


def test_yaml_nesting_up_to_the_limit_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n")  # the root map is level 1
    with pytest.raises(ConfigError):
        read_yaml(path)
    path.write_text("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n")
    data, _ = read_yaml(path)
    depth, node = 0, data["a"]
    while node:
        depth, node = depth + 1, node[0]
    assert depth == MAX_DEPTH - 2  # the innermost list is empty
