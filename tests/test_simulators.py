"""Simulators live in their own entry-point group: importing any production connector (or
loading every connector plugin, as each bus does) imports no fake; ``bus sim`` and ``bus demo``
find the fakes through ``integration_bus.simulators``."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import connectors
from integration_bus.cli import cli
from integration_bus.cli.demo_systems import DemoErp, DemoLanes, DemoShop, DemoSystems
from integration_bus.errors import ConfigError
from integration_bus.simulator import Simulators

ROOT = Path(__file__).resolve().parents[1]
#: every built-in connector: each module and package directly under connectors/
CONNECTORS = sorted(m.name for m in pkgutil.iter_modules(connectors.__path__))
NO_FAKE = "fakes = [m for m in sys.modules if 'fake' in m]; assert not fakes, fakes"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


def test_every_connector_is_covered() -> None:
    assert {"rest_shop", "soap_erp", "pos_file", "jsonl"} <= set(CONNECTORS)


@pytest.mark.parametrize("name", CONNECTORS)
def test_importing_a_connector_imports_no_fake(name: str) -> None:
    done = _python(f"import connectors.{name}, sys; {NO_FAKE}")
    assert done.returncode == 0, done.stderr


def test_loading_every_connector_plugin_imports_no_fake() -> None:
    done = _python("import sys; from integration_bus.registry import Registry; "
                   f"Registry.from_entry_points(); {NO_FAKE}")
    assert done.returncode == 0, done.stderr


def test_the_demo_module_imports_no_connector() -> None:
    # the demo reaches the fakes through the simulators' entry points only
    done = _python("import sys, integration_bus.cli.demo; "
                   "found = [m for m in sys.modules if m.startswith('connectors')]; "
                   "assert not found, found")
    assert done.returncode == 0, done.stderr


def test_the_fakes_are_registered_as_simulators_not_connectors() -> None:
    from integration_bus.registry import Registry

    simulators = Simulators.from_entry_points()
    assert {"erp", "shop", "pos"} <= set(simulators.names())
    assert set(simulators.commands()) >= {"erp", "shop"}
    assert not {"erp", "shop", "pos"} & set(Registry.from_entry_points().names())


def test_bus_sim_lists_the_simulators_commands() -> None:
    result = CliRunner().invoke(cli, ["sim", "--help"])
    assert result.exit_code == 0, result.output
    assert "erp" in result.output and "shop" in result.output


def test_an_unknown_simulator_is_a_config_error_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="unknown simulator 'erpp'") as caught:
        Simulators.from_entry_points().get("erpp")
    assert "did you mean 'erp'" in str(caught.value)


def test_the_demo_builds_its_fakes_from_the_simulators_and_each_is_its_own() -> None:
    # Given the installed simulators, When the demo's systems are built twice
    first, second = (DemoSystems(Simulators.from_entry_points()) for _ in range(2))
    try:
        # Then each offers what the demo drives, on ports and with state of its own
        assert isinstance(first.erp, DemoErp) and isinstance(first.shop, DemoShop)
        assert isinstance(first.lanes, DemoLanes)
        assert first.erp.url != second.erp.url and first.shop.url != second.shop.url
        assert first.erp.state is not second.erp.state
        assert first.erp.seeded > 0 and first.shop.skus
    finally:
        for systems in (first, second):
            for system in (systems.erp, systems.shop, systems.lanes):
                system.stop()


def test_a_simulator_without_what_the_demo_drives_is_refused_by_name() -> None:
    from integration_bus.simulator import Simulator

    installed = Simulators.from_entry_points()
    odd = Simulators([installed.get("erp"), installed.get("pos"),
                      Simulator(name="shop", summary="a shop the demo cannot drive",
                                create=installed.get("pos").create)])
    with pytest.raises(ConfigError, match="simulator 'shop' does not offer what bus demo"):
        DemoSystems(odd)
