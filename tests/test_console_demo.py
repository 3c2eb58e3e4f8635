"""The console on the reference scenario after ``bus demo`` (docs/scenario.md): the StockShort
group with its two orders, and every route balanced on the overview."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from integration_bus.cli import cli
from integration_bus.operators import Operator
from integration_bus.runtime import Bus
from integration_bus.web.console.accounts import Accounts
from integration_bus.web.console.app import make_app
from tests.console_support import PASSWORD, login

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_after_bus_demo_the_console_shows_stockshort_and_balanced_routes(
        tmp_path: Path) -> None:
    # Given `bus demo` ran in embedded mode on a copy of the project
    for part in ("config", "mappings", "schemas"):
        shutil.copytree(REPO / part, tmp_path / part)
    result = CliRunner().invoke(cli, ["demo", "--config-dir", str(tmp_path / "config"),
                                       "--json"], env={"BUS_BROKER_URL": ""})
    assert result.exit_code == 0, result.output
    # When a viewer opens the console on the demo's store (as docs/console.md says)
    state = tmp_path / "var" / "demo"
    environ = {**os.environ, "BUS_BROKER_URL": "", "BUS_VAR_DIR": str(state),
               "BUS_STORE_URL": f"sqlite:///{state / 'bus.db'}"}
    with Bus.from_config_dir(tmp_path / "config", environ=environ) as bus:
        Accounts(bus.store.db).add("vera", "viewer", PASSWORD, by=Operator.system("test"))
        with TestClient(make_app(bus, secret="d" * 48)) as client:
            login(client, "vera")
            # Then the StockShort group holds the two short orders
            groups = client.get("/dead-letters").text
            row = next(r for r in groups.split("<tr>") if "StockShort" in r)
            assert re.search(r'<td class="n">2</td><td>order_availability</td>', row), row
            group = re.search(r"group=([0-9a-f]+)", row)
            assert group
            listing = client.get(f"/dead-letters/list?group={group.group(1)}").text
            assert "2 dead letter(s)" in listing and listing.count("StockShort") == 2
            # And every route is balanced
            overview = client.get("/").text
            routes = re.findall(r"<tr[^>]*>\s*<td>([a-z_]+)</td>.*?<td class=\"(ok|error)\">",
                                overview, re.S)
            assert len(routes) == len(bus.config.settings.routes) >= 10, overview
            assert all(state == "ok" for _, state in routes), routes
            # And the files page shows the stores' simulated lanes: their files received
            files = client.get("/files").text
            received = re.search(r'<table id="received">(.*?)</table>', files, re.S)
            assert received, files
            stores = re.findall(r"<tr><td>tills</td><td>(\d{4})</td><td class=\"n\">(\d+)</td>",
                                received.group(1))
            assert len(stores) >= 2 and all(int(n) >= 1 for _, n in stores), received.group(1)
            # And the overview's order tile has the demo's web orders with a sales order
            tile = re.search(r'id="tile-orders">(.*?)</section>', overview, re.S)
            assert tile and re.search(r"\d+ order\(s\)", tile.group(1)), overview
