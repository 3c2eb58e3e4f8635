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
