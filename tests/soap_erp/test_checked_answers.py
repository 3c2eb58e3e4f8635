"""No silent success at the SOAP sink: a posting counts only on the configured operation's
response element and, where ``document_number.answer`` names it, the ERP's document number.
An HTTP 200 with an empty body, another operation's response, or no document number is
ErpNoAnswer (retried in doubt: the next attempt looks the document up first), naming the
missing element; on real HTTP against the fake ERP, and through a route on the real RabbitMQ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors.soap_erp.fakeerp import ErpServer, Injection
from connectors.soap_erp.faults import ErpNoAnswer
from integration_bus.connector import ConfigError
from tests.soap_erp.conftest import MakeSink
from tests.soap_erp.support import bus_running, open_bus, posting, sink_yaml, write_config
from tests.support.probe import wait_for

_ENV = ('<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:t="urn:retail:erp:types"><soap:Body>{}</soap:Body></soap:Envelope>')
NUMBERED = "{field: DocumentHeader.ExternalReference, answer: DocumentNumber}"

#: what the ERP answers with HTTP 200 instead of the posting (nothing is posted), and the
#: element the error must name as missing
ANSWERS: dict[str, tuple[str, str]] = {
    "empty_body": ("", "PostStockAdjustmentResponse"),
    "empty_soap_body": (_ENV.format(""), "PostStockAdjustmentResponse"),
    "other_operation": (_ENV.format("<t:FindDocumentResponse/>"),
                        "PostStockAdjustmentResponse"),
    "no_document_number": (_ENV.format("<t:PostStockAdjustmentResponse><t:DocumentNumber/>"
                                       "<t:OnHand>5</t:OnHand>"
                                       "</t:PostStockAdjustmentResponse>"), "DocumentNumber"),
}


def _canned(body: str, **rule: Any) -> Injection:
    return Injection(mode="canned", status=200, body=body, operation="PostStockAdjustment",
                     **rule)


@pytest.mark.parametrize("case", list(ANSWERS))
def test_a_200_without_the_answer_is_retried_in_doubt(case: str, erp: ErpServer,
                                                      make_sink: MakeSink) -> None:
    body, missing = ANSWERS[case]
    sink = make_sink(numbering=NUMBERED)
    erp.plan.set(_canned(body, count=1))
    envelope = posting(1)
    # When the ERP answers 200 without the posting's answer
    with pytest.raises(ErpNoAnswer) as caught:
        sink.deliver(envelope)
    # Then it is a retryable error in doubt, naming the missing element; nothing was posted
    error = caught.value
    assert error.context["missing"] == missing and missing in str(error)
    assert error.context["in_doubt"] is True
    assert error.context["operation"] == "PostStockAdjustment"
    assert error.context["document_number"].startswith("IB")
    assert erp.state.document_count() == 0
    # And the retry looks the number up first, then posts exactly once
    sink.deliver(envelope.next_attempt())
    assert erp.state.count("FindDocument") == 1
    assert erp.state.document_count() == 1 and sum(erp.state.duplicates.values()) == 0


def test_the_lookup_itself_must_answer_with_its_own_element(erp: ErpServer,
                                                            make_sink: MakeSink) -> None:
    sink = make_sink(numbering=NUMBERED)
    erp.plan.set(Injection(mode="canned", status=200, body="", operation="FindDocument"))
    with pytest.raises(ErpNoAnswer) as caught:
        sink.lookup(posting(1))  # "not found" is never read from an empty answer
    assert caught.value.context["missing"] == "FindDocumentResponse"


def test_the_document_number_path_is_checked_against_the_wsdl(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError) as caught:
        make_sink(numbering="{field: DocumentHeader.ExternalReference, answer: DocNumber}")
    assert caught.value.context["field"] == "document_number.answer"
    assert "DocumentNumber" in str(caught.value.context.get("hint"))


@pytest.mark.rabbitmq
def test_silent_answers_through_a_route_are_never_counted(tmp_path: Path, erp: ErpServer,
                                                          rabbitmq_url: str) -> None:
    """One posting per kind of silent answer, answered that way on every call, and one
    answered that way once: the first are dead-lettered after their attempts with a reason
    naming the missing element, never journaled as delivered; the last is delivered once."""
    routes = """
  postings:
    from: [erp.stock_posting.requested]
    to: [erp]
    retry: {max_attempts: 3, initial_delay: 100ms}"""
    sinks = sink_yaml(erp.url, numbering=NUMBERED, timeout="2s")
    bus = open_bus(write_config(tmp_path, rabbitmq_url, sinks=sinks, routes=routes))
    rules = [_canned(body, when=f"CASE-{name}-X") for name, (body, _) in ANSWERS.items()]
    erp.plan.set(*rules, _canned("", when="ONCE-X", count=1))
    envelopes = {name: posting(i, material=f"CASE-{name}-X")
                 for i, name in enumerate(ANSWERS)}
    once = posting(99, material="ONCE-X")
    publisher = bus.publisher()
    assert publisher.publish_many([*envelopes.values(), once]) == [None] * 5
    publisher.close()
    try:
        with bus_running(bus):
            wait_for(lambda: len(bus.store.dead_letters()) == len(ANSWERS)
                     and bus.store.count_events("delivered", route="postings") == 1,
                     timeout=60, message="every posting settled")
        letters = {d["envelope"]["payload"]["Item"]["Material"]: d
                   for d in bus.store.dead_letters()}
        for name, (_, missing) in ANSWERS.items():
            letter = letters[f"CASE-{name}-X"]
            assert letter["error_type"] == "ErpNoAnswer", letter
            assert missing in letter["message"], letter["message"]
            events = [e["event"] for e in bus.store.journal_for(envelopes[name].id)]
            assert "delivered" not in events and events.count("retried") == 2, (name, events)
        assert [e["event"] for e in bus.store.journal_for(once.id)].count("delivered") == 1
        assert erp.state.document_count() == 1 and sum(erp.state.duplicates.values()) == 0
    finally:
        bus.close()
