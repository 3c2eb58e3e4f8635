"""Helpers for console tests: a project with dead letters, users of each role, a logged-in
TestClient."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

from integration_bus.envelope import Envelope
from integration_bus.operators import Operator
from integration_bus.runtime import Bus
from integration_bus.web.console.accounts import Accounts
from tests.conftest import write_config
from tests.dlq_project import make_project, order
from tests.support.probe import running, wait_for

PASSWORD = "correct horse battery"
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
CONFIG = """
    store: {url: "STORE_URL"}
    dead_letters:
      redact: [email]
    sinks:
      out: {connector: jsonl, path: var/out.jsonl}
    routes:
      orders:
        from: [shop.order]
        pipeline: accept_order
        to: [out]
        retry: {max_attempts: 2, initial_delay: 100ms}
    """


def build(root: Path, store_url: str = "sqlite:///var/bus.db") -> Path:
    """Dead letters in embedded mode: two orders with "2 pcs" quantities (one group), one with
    an unknown store, one whose fields are hostile markup; users viewer, operator, admin."""
    make_project(root, "")
    config_dir = write_config(root, CONFIG.replace("STORE_URL", store_url))
    hostile = Envelope.create("shop.order", {**order(4, "store").payload, "store": HOSTILE,
                                             "sku": HOSTILE}, source="shop")
    letters = [order(1, "qty"), order(2, "qty"), order(3, "store"), hostile]
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        publisher = bus.publisher()
        assert publisher.publish_many(letters) == [None] * len(letters)
        publisher.close()
        with running(lambda stop: bus.run(stop, sources=[])):
            wait_for(lambda: len(bus.store.dead_letters()) == 4, message="4 dead letters")
        accounts = Accounts(bus.store.db)
        for role in ("viewer", "operator", "admin"):
            accounts.add(role, role, PASSWORD, by=Operator.system("test-setup"))
    return config_dir


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf(client: TestClient, path: str = "/login") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = _CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def login(client: TestClient, user: str, password: str = PASSWORD) -> None:
    answer = client.post("/login", data={"user": user, "password": password,
                                         "csrf": csrf(client)}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
