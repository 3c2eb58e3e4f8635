"""The fault/timeout matrix: each way the ERP can fail -> the error the sink raises -> what the
runtime decides (retry / dead letter / breaker), on real HTTP against the fake ERP; then the
same matrix through a route on the real RabbitMQ (0 retries of business faults)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from connectors.soap_erp.breaker import CircuitOpen
from connectors.soap_erp.config import FaultRule, FaultRules
from connectors.soap_erp.fakeerp import ErpServer, Injection
from connectors.soap_erp.faults import (
    ErpBusinessFault,
    ErpRejected,
    ErpUnavailable,
    FaultClassifier,
    read_fault,
)
from integration_bus.connector import Envelope, PermanentError, TransientError
from tests.soap_erp.conftest import MakeSink
from tests.soap_erp.support import bus_running, open_bus, posting, sink_yaml, write_config
from tests.support.probe import wait_for

BUSINESS = r"""
    faults:
      business: [{code: '(Server\.)?Deficit'}]"""


def decision(error: BaseException | None) -> str:
    """What the runtime does with a sink's outcome (see docs/lifecycle.md)."""
    if error is None:
        return "delivered"
    if isinstance(error, CircuitOpen):
        return "breaker"
    return "dead_letter" if isinstance(error, PermanentError) else "retry"


def outcome(sink: Any, envelope: Envelope) -> BaseException | None:
    try:
        sink.deliver(envelope)
    except Exception as exc:
        return exc
    return None


@dataclass(frozen=True)
class Case:
    injection: dict[str, Any] | None
    error: type[BaseException] | None
    decision: str
    committed: bool  # does the ERP hold the document after the first call?
    port: str = "StockPort"
    movement: str = "701"
    quantity: int = 1


CASES = {
    "ok": Case(None, None, "delivered", True),
    "slow": Case({"mode": "slow", "delay": "300ms"}, None, "delivered", True),
    "timeout": Case({"mode": "timeout", "delay": "5s"}, ErpUnavailable, "retry", True),
    "http_500": Case({"mode": "http_500"}, ErpUnavailable, "retry", False),
    "html_page": Case({"mode": "html"}, ErpUnavailable, "retry", False),
    "server_fault": Case({"mode": "server_fault"}, ErpUnavailable, "retry", False),
    "client_fault": Case({"mode": "client_fault"}, ErpRejected, "dead_letter", False),
    "business_fault": Case({"mode": "business_fault"}, ErpBusinessFault, "dead_letter", False),
    "deficit": Case(None, ErpBusinessFault, "dead_letter", False, movement="551", quantity=999),
    "unlisted_server_fault": Case(None, ErpUnavailable, "retry", False, movement="999"),
    "invalid_request": Case(None, ErpRejected, "dead_letter", False, quantity=-3),
    "drop": Case({"mode": "drop"}, ErpUnavailable, "retry", False),
    "drop_after_commit": Case({"mode": "drop_after_commit"}, ErpUnavailable, "retry", True),
    "soap12_receiver": Case({"mode": "server_fault"}, ErpUnavailable, "retry", False,
                            port="StockPort12"),
    "soap12_sender": Case({"mode": "client_fault"}, ErpRejected, "dead_letter", False,
                          port="StockPort12"),
    "soap12_business": Case({"mode": "business_fault"}, ErpBusinessFault, "dead_letter", False,
                            port="StockPort12"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fault_matrix_at_the_sink(name: str, erp: ErpServer, make_sink: MakeSink) -> None:
    case = CASES[name]
    sink = make_sink(port=case.port, timeout="800ms", extra=BUSINESS)
    if case.injection is not None:
        erp.plan.set(Injection(operation="PostStockAdjustment", count=1, **case.injection))
    envelope = posting(1, movement=case.movement, quantity=case.quantity)
    # When the posting meets the case
    error = outcome(sink, envelope)
    # Then the sink raises the expected error, and the runtime's decision follows from it
    assert decision(error) == case.decision, error
    if case.error is not None:
        assert isinstance(error, case.error), error
        assert error.context["operation"] == "PostStockAdjustment"  # type: ignore[attr-defined]
        assert error.context["document_number"].startswith("IB")  # type: ignore[attr-defined]
    assert erp.state.document_count() == int(case.committed)
    if name == "html_page":
        assert "Bad Gateway" in str(error) and "Bad Gateway" in error.context["excerpt"]  # type: ignore[union-attr]
    if name in ("timeout", "drop", "drop_after_commit"):
        assert error.context["in_doubt"] is True  # type: ignore[union-attr]
    if case.decision == "retry" and case.injection is not None:
        # And the retry (the next attempt) leaves exactly one document; a posting that was
        # committed is found by its number and not sent again
        erp.plan.clear()
        assert outcome(sink, envelope.next_attempt()) is None
        assert erp.state.document_count() == 1
        assert erp.state.count("PostStockAdjustment") == (1 if case.committed else 2)
        assert erp.state.count("FindDocument") == 1
        assert sum(erp.state.duplicates.values()) == 0


def test_an_unreachable_erp_is_retried_and_not_in_doubt(make_sink: MakeSink) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connection refused
        sink = make_sink(url=f"http://127.0.0.1:{port}/erp")
        error = outcome(sink, posting(1))
    assert decision(error) == "retry" and isinstance(error, ErpUnavailable)
    assert error.context["in_doubt"] is False and error.context["outcome"] == "connection_error"


def test_a_request_that_does_not_fit_the_wsdl_is_refused_before_sending(
        erp: ErpServer, make_sink: MakeSink) -> None:
    sink = make_sink()
    bad = posting(1)
    payload = {**bad.payload, "Item": {**bad.payload["Item"], "Colour": "blue"}}
    error = outcome(sink, bad.derive(payload=payload))
    assert isinstance(error, PermanentError) and decision(error) == "dead_letter"
    assert "Colour" in str(error)
    assert erp.state.calls == {}


def test_the_table_is_configurable_business_and_transient_rows(erp: ErpServer,
                                                               make_sink: MakeSink) -> None:
    # An undefined movement type is a Server fault: retried unless listed as business
    listed = make_sink(extra=r"""
    faults:
      business: [{detail: 'M7-0\d\d'}]
      transient: [{string: 'Session invalid'}]""")
    error = outcome(listed, posting(1, movement="999"))
    assert isinstance(error, ErpBusinessFault) and decision(error) == "dead_letter"
    assert error.context["fault_detail"].startswith("M7-005")
    # and a Client fault listed as transient is retried
    erp.plan.set(Injection(mode="client_fault", operation="PostStockAdjustment", count=1))
    error = outcome(listed, posting(2))
    assert isinstance(error, ErpUnavailable) and decision(error) == "retry"


def test_authentication_failures_are_dead_lettered(erp: ErpServer, make_sink: MakeSink) -> None:
    erp.service.users = {"bus-user": "s3cret-erp-pw"}  # the ERP now wants WS-Security
    error = outcome(make_sink(), posting(1))
    assert isinstance(error, ErpRejected) and "wsse:FailedAuthentication" in str(error)
    for digest in ("false", "true"):
        sink = make_sink(extra=f"""
    ws_security: {{username: "${{ERP_USER}}", password: "${{ERP_PASSWORD}}", digest: {digest}}}""")
        assert outcome(sink, posting(2)) is None
    assert erp.state.document_count() == 1  # the second sink's posting was found as a repeat


def _fault(version: str, code: str, reason: str, detail: str = "", sub: str = "") -> Any:
    if version == "1.1":
        text = (f'<e:Body xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Fault>'
                f"<faultcode>e:{code}</faultcode><faultstring>{reason}</faultstring>"
                f"<detail><x>{detail}</x></detail></e:Fault></e:Body>")
    else:
        subcode = f"<e:Subcode><e:Value>erp:{sub}</e:Value></e:Subcode>" if sub else ""
        text = (f'<e:Body xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Fault><e:Code>'
                f"<e:Value>e:{code}</e:Value>{subcode}</e:Code><e:Reason><e:Text>{reason}"
                f"</e:Text></e:Reason><e:Detail><x>{detail}</x></e:Detail></e:Fault></e:Body>")
    body = etree.fromstring(text)
    return read_fault(body)


def test_fault_reading_and_classification_units() -> None:
    rules = FaultRules(business=[FaultRule(code=r"(Server\.)?Deficit"),
                                 FaultRule(detail=r"^V1-\d+")],
                       transient=[FaultRule(string="locked by user")])
    classify = FaultClassifier(rules)
    table = [
        (_fault("1.1", "Client", "bad"), ErpRejected),
        (_fault("1.1", "Server", "db down"), ErpUnavailable),
        (_fault("1.1", "Server.Deficit", "not enough"), ErpBusinessFault),
        (_fault("1.1", "Server", "no", detail="V1-420 only 3"), ErpBusinessFault),
        (_fault("1.1", "Client", "record locked by user X"), ErpUnavailable),
        (_fault("1.1", "VersionMismatch", "1.3?"), ErpRejected),
        (_fault("1.2", "Sender", "bad"), ErpRejected),
        (_fault("1.2", "Receiver", "db down"), ErpUnavailable),
        (_fault("1.2", "Receiver", "not enough", sub="Deficit"), ErpBusinessFault),
    ]
    for fault, expected in table:
        error = classify.error(fault, operation="PostStockAdjustment", document_number="IB1")
        assert type(error) is expected, (fault, error)
        assert error.context["operation"] == "PostStockAdjustment"
        assert error.context["document_number"] == "IB1"
        assert isinstance(error, TransientError) == (expected is ErpUnavailable)
    deficit = read_fault(etree.fromstring(
        b'<e:Body xmlns:e="http://www.w3.org/2003/05/soap-envelope"/>'))
    assert deficit is None


@pytest.mark.rabbitmq
def test_fault_matrix_through_a_route(tmp_path: Path, erp: ErpServer, rabbitmq_url: str) -> None:
    """Every case at once through a route: retry cases are delivered after one retry with one
    document each; dead-letter cases are dead-lettered after one call: 0 retries."""
    routes = """
  postings:
    from: [erp.stock_posting.requested]
    to: [erp]
    retry: {max_attempts: 4, initial_delay: 100ms}"""
    sinks = sink_yaml(erp.url, timeout="800ms", extra=BUSINESS)
    bus = open_bus(write_config(tmp_path, rabbitmq_url, sinks=sinks, routes=routes))
    cases = {n: c for n, c in CASES.items() if c.port == "StockPort"}
    rules: list[Injection] = []
    envelopes: dict[str, Envelope] = {}
    for name, case in cases.items():
        material = f"CASE-{name}-X"
        if case.injection is not None:
            rules.append(Injection(operation="PostStockAdjustment", when=material, count=1,
                                   **case.injection))
        envelopes[name] = posting(len(envelopes), movement=case.movement,
                                  quantity=case.quantity, material=material)
    erp.state.seed("CASE-deficit-X", "1042", "0001", 5)
    erp.plan.set(*rules)
    publisher = bus.publisher()
    assert publisher.publish_many(list(envelopes.values())) == [None] * len(envelopes)
    publisher.close()
    # the unlisted Server fault fails on every attempt: retried until it gives up
    dead = {n for n, c in cases.items() if c.decision == "dead_letter"}
    retried = {n for n, c in cases.items() if c.decision == "retry"} - {"unlisted_server_fault"}
    delivered = set(cases) - dead - {"unlisted_server_fault"}
    try:
        with bus_running(bus):
            wait_for(lambda: len(bus.store.dead_letters()) == len(dead) + 1
                     and bus.store.count_events("delivered", route="postings")
                     == len(delivered), timeout=60, message="every case settled")
        letters = {d["envelope"]["payload"]["Item"]["Material"]: d
                   for d in bus.store.dead_letters()}
        assert set(letters) == {f"CASE-{n}-X" for n in dead | {"unlisted_server_fault"}}
        assert "gave up after 4 attempt" in letters["CASE-unlisted_server_fault-X"]["message"]
        for name in dead:  # 0 retries of business (and other permanent) faults
            events = [e["event"] for e in bus.store.journal_for(envelopes[name].id)]
            assert "retried" not in events, name
            assert erp.state.count("PostStockAdjustment", f"CASE-{name}-X") == 1, name
        assert letters["CASE-deficit-X"]["error_type"] == "ErpBusinessFault"
        assert letters["CASE-business_fault-X"]["error_type"] == "ErpBusinessFault"
        for name in retried:  # one failure, one retry, delivered
            events = [e["event"] for e in bus.store.journal_for(envelopes[name].id)]
            assert events.count("retried") == 1 and "delivered" in events, (name, events)
        assert erp.state.document_count() == len(delivered)
        assert sum(erp.state.duplicates.values()) == 0
    finally:
        bus.close()
