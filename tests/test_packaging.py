"""What an installed (not editable) bus contains: every module and data file it needs."""

from __future__ import annotations

import configparser
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_every_folder_of_python_modules_is_a_package_the_distribution_ships() -> None:
    # An editable install imports folders without __init__.py (namespace packages), but
    # setup.cfg's `packages = find:` leaves them out of a wheel: the image then fails at import.
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    include = cfg["options.packages.find"]["include"].split()
    shipped = set(find_packages(where=str(ROOT), include=include))
    folders = {str(p.parent.relative_to(ROOT)).replace("/", ".")
               for top in ("integration_bus", "connectors") for p in (ROOT / top).rglob("*.py")}
    assert folders - shipped == set()


def test_the_license_file_ships_with_the_distribution() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["license"] == "Apache-2.0"
    assert cfg["metadata"]["license_files"].split() == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()


def test_the_version_is_written_once_and_the_changelog_has_its_section() -> None:
    import re

    from click.testing import CliRunner

    from integration_bus import __version__
    from integration_bus.cli import cli

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["version"] == "attr: integration_bus.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.strip().endswith(f"version {__version__}")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog,
                     re.M)
