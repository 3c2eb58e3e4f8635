"""``bus dlq`` day to day (issue 14, item 7): a list readable at any terminal width with ids
printed whole, any unique prefix of an id taken by every command (an ambiguous one refused with
the candidates, exit 2), and one ERP fault across many SKUs as one failure group."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from ulid import ULID

from connectors.soap_erp.config import FaultRule, FaultRules
from connectors.soap_erp.faults import SOAP11_ENV, SOAP12_ENV, FaultClassifier, QName, SoapFault
from integration_bus.batch.settle import _code, _message
from integration_bus.cli import cli
from integration_bus.envelope import Envelope
from integration_bus.runtime import Bus
from integration_bus.store import utcnow
from integration_bus.store.records import DeadLetter, fingerprint, normalise
from integration_bus.store.store import Settlement
from tests.dlq_project import make_project

ERP = "urn:example:erp:faults"
RULES = FaultRules(namespaces={"erp": ERP}, business=[FaultRule(qname="erp:Deficit")])
WEBHOOK_REF = {"shop": "main-shop", "delivery_id": "b3c1a7f0-5d2e-4a8b-9c1d-2e3f4a5b6c7d",
               "topic": "orders/create", "body_sha256": "ab" * 32, "event_id": "5551234567"}
LONG_MESSAGE = ("unroutable: no route takes message type shop.shopify.orders_create; "
                "bindings are shop.order, pos.sale_line and inventory.adjusted")


def deficit(sku: str, qty: int) -> Exception:
    """The error the SOAP sink raises for a real ERP deficit fault (1.2, erp:Deficit)."""
    fault = SoapFault("1.2", QName(SOAP12_ENV, "Receiver"), (QName(ERP, "Deficit"),),
                      f"Deficit of {sku} in plant 1042: {qty} PC short", "")
    return FaultClassifier(RULES).error(fault, operation="CreateSalesOrder", sku=sku)


def letter(error_type: str, message: str, *, route: str | None = "orders",
           step: str | None = None, code: str | None = None, source_ref: object = None,
           minutes_ago: int = 0) -> DeadLetter:
    failed_at = utcnow() - timedelta(minutes=minutes_ago)
    # ids made at the failure time: letters failing minutes apart differ early in their ids
    return DeadLetter(id=str(ULID.from_datetime(failed_at)),
                      envelope={**Envelope.create("shop.order", {"order_id": "W-1"},
                                                  source="shop").to_dict(),
                                "id": str(ULID.from_datetime(failed_at - timedelta(hours=2)))},
                      route=route, reason="error", error_type=error_type, message=message,
                      failed_at=failed_at, step=step,
                      sink="erp" if code else None, source_ref=source_ref, code=code)


# -- grouping ------------------------------------------------------------------------------------
def test_one_erp_fault_across_many_skus_is_one_group() -> None:
    errors = [deficit(sku, qty) for sku, qty in
              (("SKU-1042", 3), ("TSHIRT-BLUE-M", 1), ("ABC123", 12), ("4006381333931", 2))]
    codes = {_code(e) for e in errors}
    assert codes == {"Receiver.Deficit"}
    prints = {fingerprint(type(e).__name__, _message(e), "sales", "erp", code=_code(e))
              for e in errors}
    assert len(prints) == 1
    other = FaultClassifier(RULES).error(
        SoapFault("1.2", QName(SOAP12_ENV, "Receiver"), (QName(ERP, "CreditBlock"),),
                  "Customer 4711 is blocked for credit", ""), operation="CreateSalesOrder")
    assert fingerprint(type(other).__name__, _message(other), "sales", "erp",
                       code=_code(other)) not in prints


def test_a_generic_fault_code_groups_by_the_normalised_text() -> None:
    # a bare 1.1 "Server" code says only whose fault it is: the text decides, variables masked
    def server(text: str) -> str:
        return fingerprint("ErpUnavailable", text, "sales", "erp",
                           code=f"{{{SOAP11_ENV}}}Server".rsplit("}", 1)[1])
    assert server("Material MAT-001 locked by user JSMITH7") == \
        server("Material MAT-9 locked by user KLEE2")
    assert server("Material MAT-001 locked by user JSMITH7") != server("Posting period closed")


@pytest.mark.parametrize(("first", "second"), [
    ("no entry for '9999' in location", "no entry for '0042' in location"),
    ("order 01JAB8ZJ9XQ5V0K8Y1C5M2N3P4 refused", "order 01JAB8ZK00000000000000000A refused"),
    ("mail to anna.b+shop@example.com bounced", "mail to x@mail.example.org bounced"),
    ("SKU ABC-XL-RED not found (qty 3)", "SKU TSHIRT_BLUE_M not found (qty 12.5)"),
    ("digest 3fa85f6457174562b3fc2c963f66afa6 differs", "digest 0b1c2d3e4f5a6b7c8d9e differs"),
    ("see https://erp.example/doc?id=4 for details", "see http://other/x for details"),
])
def test_variable_parts_of_a_message_are_masked(first: str, second: str) -> None:
    assert normalise(first) == normalise(second)
    assert fingerprint("MappingError", first, "orders", "plant") == \
        fingerprint("MappingError", second, "orders", "plant")


def test_words_are_kept_so_different_faults_stay_apart() -> None:
    assert normalise("Deficit of SKU-1 (3 PC)") == "Deficit of <id> (<n> PC)"
    assert normalise("E-mail is required") == "E-mail is required"
    assert fingerprint("MappingError", "posting period closed", "orders", None) != \
        fingerprint("MappingError", "customer blocked", "orders", None)


# -- the CLI -------------------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, list[DeadLetter]]]:
    """An embedded (SQLite) project holding webhook dead letters with long references and
    messages, the same ERP fault for five SKUs, and one with very long names everywhere."""
    config_dir = make_project(tmp_path, "")
    letters = [letter("UnroutableError", LONG_MESSAGE, route=None, step="source:shop",
                      source_ref=dict(WEBHOOK_REF, event_id=str(5551234567 + n)), minutes_ago=n)
               for n in range(3)]
    for n, sku in enumerate(("SKU-1", "SKU-22", "TSHIRT-BLUE-M", "ABC123", "4006381333931")):
        error = deficit(sku, n + 1)
        letters.append(letter(type(error).__name__, _message(error), route="orders", step=None,
                              code=_code(error), minutes_ago=10 + n))
    letters.append(letter("MarketplaceListingSynchronisationRefused",
                          "x" * 300, route="marketplace-listing-synchronisation-europe-west",
                          step="enrich-with-warehouse-availability-per-fulfilment-centre",
                          source_ref={"file": "very/long/path/" * 8 + "f.csv", "line": 7},
                          minutes_ago=30))
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        bus.store.settle(Settlement(dead=letters))
    yield config_dir, letters


def run(config_dir: Path, *args: str, columns: int = 140,
        stdout_only: bool = False) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["dlq", args[0], "--config-dir", str(config_dir),
                                      *args[1:]], env={"COLUMNS": str(columns)})
    return result.exit_code, result.stdout if stdout_only else result.output


def unique_prefix(ident: str, others: list[str]) -> str:
    for length in range(1, len(ident) + 1):
        if not any(o != ident and o.startswith(ident[:length]) for o in others):
            return ident[:length]
    return ident


@pytest.mark.parametrize("columns", [220, 160, 159, 100, 80, 40])
def test_list_prints_whole_ids_and_readable_messages_at_any_width(
        project: tuple[Path, list[DeadLetter]], columns: int) -> None:
    config_dir, letters = project
    code, out = run(config_dir, "list", "--limit", "100", columns=columns)
    assert code == 0, out
    assert max(len(line) for line in out.splitlines()) <= columns
    for dead in letters:
        assert dead.id in out, (columns, dead.id)
    # the message is there in words, not squeezed to nothing (it wraps in its cell)
    assert "unroutable: no route" in out
    assert "Deficit" in out and "ERP fault" in out
    # a webhook's reference is its shop, topic and event id, not a 64-digit digest
    assert "main-shop" in out and "ab" * 32 not in out


@pytest.mark.parametrize("columns", [220, 80])
def test_every_id_printed_is_taken_by_show(project: tuple[Path, list[DeadLetter]],
                                           columns: int) -> None:
    config_dir, letters = project
    code, out = run(config_dir, "list", columns=columns)
    printed = re.findall(r"\b[0-9A-HJKMNP-TV-Z]{26}\b", out)
    assert sorted(printed) == sorted(d.id for d in letters)
    for ident in printed:
        code, shown = run(config_dir, "show", ident, "--json")
        assert code == 0 and json.loads(shown)["id"] == ident


def test_any_unique_prefix_is_taken_by_every_command(
        project: tuple[Path, list[DeadLetter]]) -> None:
    config_dir, letters = project
    ids = [d.id for d in letters] + [d.envelope["id"] for d in letters]
    target = letters[3]
    prefix = unique_prefix(target.id, ids)
    assert len(prefix) < len(target.id)
    code, out = run(config_dir, "show", prefix, "--json")
    assert code == 0 and json.loads(out)["id"] == target.id
    code, out = run(config_dir, "show", prefix.lower(), "--json")  # ULIDs are case-blind
    assert code == 0 and json.loads(out)["id"] == target.id
    envelope_prefix = unique_prefix(target.envelope["id"], ids)
    code, out = run(config_dir, "show", envelope_prefix, "--json")
    assert code == 0 and json.loads(out)["id"] == target.id
    code, out = run(config_dir, "list", prefix, "--json")
    assert code == 0 and [i["id"] for i in json.loads(out)["items"]] == [target.id]
    code, out = run(config_dir, "export", prefix, stdout_only=True)
    assert code == 0 and json.loads(out.splitlines()[0])["id"] == target.id
    code, out = run(config_dir, "replay", prefix, "--dry-run", "--json")
    assert code == 0 and json.loads(out)["total"] == 1
    code, out = run(config_dir, "discard", prefix, "--reason", "test")
    assert code == 0 and "discarded 1" in out
    code, out = run(config_dir, "restore", prefix, "--reason", "test")
    assert code == 0 and "restored 1" in out
    code, out = run(config_dir, "replay", prefix)
    assert code == 0 and "queued 1 replay(s)" in out
    code, out = run(config_dir, "audit", "--json")
    audit = json.loads(out)
    assert any(target.id in row["target"] for row in audit if row["action"] == "discard")


def test_an_ambiguous_prefix_is_refused_with_the_candidates(
        project: tuple[Path, list[DeadLetter]]) -> None:
    config_dir, letters = project
    ids = sorted(d.id for d in letters)
    # ULIDs made within the hour share the start of their time part
    shared = next(ids[0][:n] for n in range(len(ids[0]), 0, -1)
                  if all(i.startswith(ids[0][:n]) for i in ids))
    for command in (["show", shared], ["replay", shared], ["discard", shared, "--reason", "x"],
                    ["list", shared], ["export", shared]):
        code, out = run(config_dir, *command)
        assert code == 2, (command, out)
        assert f"{shared!r} is the start of {len(letters)} dead letters' ids" in out
        for ident in ids:
            assert ident in out
    code, out = run(config_dir, "list", "--json")
    assert json.loads(out)["total"] == len(letters)  # nothing was discarded or replayed


def test_one_erp_fault_is_one_group_in_bus_dlq_groups(
        project: tuple[Path, list[DeadLetter]]) -> None:
    config_dir, _ = project
    code, out = run(config_dir, "groups", "--json")
    groups = json.loads(out)
    assert sorted(g["count"] for g in groups) == [1, 3, 5]
    erp = next(g for g in groups if g["count"] == 5)
    assert erp["error_type"] == "ErpBusinessFault" and erp["route"] == "orders"
    code, out = run(config_dir, "list", "--group", erp["group"][:6], "--json")
    assert json.loads(out)["total"] == 5
    for columns in (200, 60):
        code, out = run(config_dir, "groups", columns=columns)
        assert code == 0 and erp["group"] in out
        assert max(len(line) for line in out.splitlines()) <= columns
