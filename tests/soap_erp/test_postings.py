"""Idempotent postings: the document number, "ERP committed, then the connection dropped" on 50
of 1,000 postings, a worker killed while the ERP held the answer (lookup of a delivery in
doubt), request mappings (the mapping engine), request/reply through routes, reservations."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.soap_erp import document_number
from connectors.soap_erp.config import DocumentNumberConfig
from connectors.soap_erp.fakeerp import ErpServer, Injection
from connectors.soap_erp.faults import ErpBusinessFault
from integration_bus.connector import Envelope
from tests.soap_erp.conftest import MakeSink
from tests.soap_erp.support import bus_running, open_bus, posting, sink_yaml, write_config
from tests.support.probe import Target, wait_for

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ROUTE = """
  postings:
    from: [erp.stock_posting.requested]
    to: [erp]
    retry: {max_attempts: 5, initial_delay: 100ms}"""


def test_the_document_number_is_derived_from_the_idempotency_key() -> None:
    config = DocumentNumberConfig(prefix="IB", length=26)
    first = document_number("adj-1/0", config)
    assert first == document_number("adj-1/0", config)  # every copy gets the same number
    assert first != document_number("adj-1/1", config)
    assert len(first) == 26 and first.startswith("IB") and first.isalnum() and first.isupper()
    short = DocumentNumberConfig(prefix="", length=16)
    assert document_number("x" * 500, short) == document_number("x" * 500, short)
    assert len(document_number("x" * 500, short)) == 16


def test_the_sink_sets_the_number_and_the_erp_keeps_one_document_per_number(
        erp: ErpServer, make_sink: MakeSink) -> None:
    sink = make_sink()
    envelope = posting(7, key="adj-7/0")
    sink.deliver(envelope)
    number = document_number("adj-7/0", DocumentNumberConfig())
    assert erp.state.find(number) is not None  # the mapping's placeholder was replaced
    assert sink.lookup(envelope) is True and sink.lookup(posting(8)) is False
    sink.deliver(envelope.replayed())  # a replay looks first: not sent again
    assert erp.state.count("PostStockAdjustment") == 1
    assert erp.state.count("FindDocument") == 3
    sink.deliver(envelope)  # the same envelope again (no reason to doubt): the ERP dedupes
    assert erp.state.document_count() == 1 and erp.state.duplicates[number] == 1


@pytest.mark.rabbitmq
def test_erp_committed_then_the_connection_dropped_on_50_of_1000_postings(
        tmp_path: Path, erp: ErpServer, rabbitmq_url: str) -> None:
    sinks = sink_yaml(erp.url, extra="\n    concurrency: 4")
    bus = open_bus(write_config(tmp_path, rabbitmq_url, sinks=sinks, routes=ROUTE))
    # Given an ERP that drops the connection after committing every 20th posting (50 times)
    erp.plan.set(Injection(mode="drop_after_commit", operation="PostStockAdjustment", every=20,
                           count=50))
    envelopes = [posting(n, key=f"adj-{n}/0") for n in range(1000)]
    publisher = bus.publisher()
    assert publisher.publish_many(envelopes) == [None] * 1000
    publisher.close()
    try:
        # When 1,000 postings go through the route
        with bus_running(bus):
            wait_for(lambda: bus.store.count_events("delivered", route="postings") == 1000,
                     timeout=120, message="1,000 postings delivered")
        # Then the ERP holds exactly 1,000 documents, one per posting, none twice
        assert erp.plan.fired() == 50
        assert erp.state.document_count() == 1000
        numbers = {document_number(e.idempotency_key, DocumentNumberConfig()) for e in envelopes}
        assert set(erp.state.by_reference) == numbers
        assert sum(erp.state.duplicates.values()) == 0  # no posting was even sent twice
        assert erp.state.count("PostStockAdjustment") == 1000
        assert erp.state.count("FindDocument") == 50  # each dropped one was looked up, found
        assert bus.store.count_events("retried", route="postings") == 50
        assert bus.store.dead_letters() == []
    finally:
        bus.close()


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_a_worker_killed_while_the_erp_held_the_answer_recovers_by_lookup(
        tmp_path: Path, erp: ErpServer, rabbitmq_url: str) -> None:
    config_dir = write_config(tmp_path, rabbitmq_url, sinks=sink_yaml(erp.url, timeout="30s"),
                              routes=ROUTE)
    bus = open_bus(config_dir)  # declares the topology
    # Given the ERP commits the posting and then holds its answer
    erp.plan.set(Injection(mode="timeout", delay="60s", operation="PostStockAdjustment"))
    publisher = bus.publisher()
    envelope = posting(1, key="adj-crash/0")
    assert publisher.publish_many([envelope]) == [None]
    publisher.close()
    log = (tmp_path / "worker.log").open("wb")
    child = subprocess.Popen([sys.executable, "-m", "tests.soap_erp.worker_child",
                              str(config_dir)], cwd=REPO, env={**os.environ}, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: erp.state.document_count() == 1, timeout=60,
                 message="the ERP committed the posting")
        # When the worker process dies waiting for the answer (claim pending, message unacked)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        log.close()
    erp.plan.clear()
    # Then a new worker gets the redelivery, finds its claim in doubt, asks the sink's lookup,
    # and records it delivered without posting again
    try:
        with bus_running(bus):
            wait_for(lambda: bus.store.count_events("delivered", route="postings") == 1,
                     timeout=60, message="the posting settled")
        delivered = [e for e in bus.store.journal_for(envelope.id) if e["event"] == "delivered"]
        assert delivered[0]["detail"].get("recovered") is True
        assert erp.state.count("PostStockAdjustment") == 1
        assert erp.state.document_count() == 1 and sum(erp.state.duplicates.values()) == 0
    finally:
        bus.close()


def _order(order_id: int) -> Envelope:
    return Envelope.create("shop.order.accepted", {
        "order_id": order_id, "ordered_at": "2024-03-01T23:30:00Z", "customer_id": 42,
        "currency": "EUR", "lines": [{"sku": "mat-1", "quantity": 2, "price": "19.99"},
                                     {"sku": "mat-2", "quantity": 1, "price": "0.10"}]},
        source="shop", idempotency_key=f"shop:order:{order_id}")


def test_a_request_mapping_builds_the_sales_order(tmp_path: Path, erp: ErpServer,
                                                  make_sink: MakeSink) -> None:
    mapping = tmp_path / "order_to_sales_order.yaml"
    shutil.copy(HERE / "project" / "order_to_sales_order.yaml", mapping)
    sink = make_sink(operation="CreateSalesOrder", port="SalesPort",
                     numbering="{field: ExternalReference}",
                     extra=f"\n    request_mapping: {mapping}")
    sink.deliver(_order(1001))
    sink.deliver(_order(1001).next_attempt())  # a retry: found by its number, not resent
    (doc,) = erp.state.documents.values()
    assert doc.type == "sales_order" and doc.value == Decimal("40.08")
    assert doc.reference == document_number("shop:order:1001", DocumentNumberConfig())
    request = next(body for _, op, body in erp.state.log if op == "CreateSalesOrder")
    assert b"<ns0:OrderDate>2024-03-02</ns0:OrderDate>" in request  # Berlin's business day
    assert b"<ns0:Material>MAT-1</ns0:Material>" in request
    assert erp.state.count("CreateSalesOrder") == 1


@pytest.mark.rabbitmq
def test_request_reply_publishes_the_mapped_answer(tmp_path: Path, erp: ErpServer,
                                                   rabbitmq_url: str) -> None:
    mapping = tmp_path / "stock_to_availability.yaml"
    shutil.copy(HERE / "project" / "stock_to_availability.yaml", mapping)
    erp.state.seed("MAT-1", "1042", "0002", 7)
    sinks = sink_yaml(erp.url, name="erp_stock", operation="QueryStock", numbering="null",
                      lookup="null", extra=f"""
    reply: {{type: erp.stock.levels, mapping: {mapping}}}""")
    routes = """
  availability:
    from: [erp.availability.requested]
    to: [erp_stock]
  answers:
    from: [inventory.availability]
    to: [probe]"""
    target = Target()
    bus = open_bus(write_config(tmp_path, rabbitmq_url, sinks=sinks, routes=routes), target)
    question = Envelope.create("erp.availability.requested", {"Material": "MAT-1",
                                                              "Plant": "1042"}, source="shop")
    publisher = bus.publisher()
    assert publisher.publish_many([question]) == [None]
    publisher.close()
    try:
        with bus_running(bus):
            wait_for(lambda: target.count() == 1, timeout=30, message="the answer arrived")
        (answer,) = target.envelopes
        assert answer.type == "inventory.availability"
        assert answer.correlation_id == question.correlation_id
        assert answer.payload["sku"] == "MAT-1"
        assert Decimal(str(answer.payload["available"])) == Decimal(107)
        assert [loc["location"] for loc in answer.payload["locations"]] == ["0001", "0002"]
    finally:
        bus.close()


def test_reservations_are_single_and_a_shortfall_is_a_business_fault(
        erp: ErpServer, make_sink: MakeSink) -> None:
    sink = make_sink(operation="ReserveStock", port="SalesPort",
                     numbering="{field: ExternalReference}",
                     extra=r"""
    faults:
      business: [{code: '(Server\.)?Deficit'}]""")

    def reserve(key: str, quantity: int) -> Envelope:
        return Envelope.create("erp.reservation.requested", {
            "ExternalReference": "set-by-the-sink", "Material": "MAT-3", "Plant": "1042",
            "StorageLocation": "0001", "Quantity": quantity}, source="shop",
            idempotency_key=key)

    sink.deliver(reserve("res-1", 60))
    sink.deliver(reserve("res-1", 60))  # a redelivery: the ERP answers with the same document
    assert erp.state.query("MAT-3", "1042", "0001")[0][1].available == 40
    with pytest.raises(ErpBusinessFault) as caught:
        sink.deliver(reserve("res-2", 41))
    assert "Only 40 EA of MAT-3" in str(caught.value)
    assert caught.value.context["fault_code"] == "Server.Deficit"
    assert erp.state.document_count("reservation") == 1
    assert sum(erp.state.duplicates.values()) == 1
