"""SOAP faults as real stacks write them (fixtures in ``faults/``): read by element name and
namespace rules, codes and subcodes kept as QNames (prefixes resolved where they are written),
classified by rules on those QNames — at the reader, and through the sink over real HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.soap_erp.config import FaultRule, FaultRules
from connectors.soap_erp.fakeerp import ErpServer, Injection
from connectors.soap_erp.faults import (
    SOAP11_ENV,
    SOAP12_ENV,
    ErpBusinessFault,
    ErpRejected,
    ErpUnavailable,
    FaultClassifier,
    QName,
    SoapFault,
    read_fault,
)
from connectors.soap_erp.xmlsafe import SafeXml
from tests.soap_erp.conftest import MakeSink
from tests.soap_erp.support import posting

FIXTURES = Path(__file__).parent / "faults"
WCF = "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher"
ERP = "urn:example:erp:faults"
AXIS = "http://xml.apache.org/axis/"
S11, S12 = f"{{{SOAP11_ENV}}}", f"{{{SOAP12_ENV}}}"

RULES = FaultRules(
    namespaces={"wcf": WCF, "erp": ERP},
    business=[FaultRule(qname="erp:Deficit"), FaultRule(detail=r"M7\(021\)")],
    transient=[FaultRule(qname="wcf:InternalServiceFault")])

# file: (version, code, subcodes, reason, error under RULES)
SHAPES = {
    "soap11_default_namespace": ("1.1", f"{S11}Server", [],
                                 "Posting service unavailable: update task queue full",
                                 ErpUnavailable),
    "soap11_default_envelope": ("1.1", f"{S11}Client", [], "Material 100-999 does not exist",
                                ErpRejected),
    "cxf_soap11": ("1.1", f"{S11}Server", [], "Could not open connection to the database",
                   ErpUnavailable),
    "cxf_soap12_subcode": ("1.2", f"{S12}Receiver", [f"{{{ERP}}}Deficit"],
                           "Deficit in storage location 0001", ErpBusinessFault),
    "axis1_user_exception": ("1.1", f"{{{AXIS}}}Server.userException", [],
                             "java.lang.NullPointerException", ErpUnavailable),
    "axis2_code_prefix_on_element": ("1.1", f"{S11}Server", [],
                                     "Transport error: 503 Error: Service Unavailable",
                                     ErpUnavailable),
    "wcf_soap11_internal": ("1.1", f"{{{WCF}}}InternalServiceFault", [],
                            "The server was unable to process the request due to an internal "
                            "error.", ErpUnavailable),
    "wcf_soap12_subcode": ("1.2", f"{S12}Receiver", [f"{{{WCF}}}InternalServiceFault"],
                           "The server was unable to process the request due to an internal "
                           "error.", ErpUnavailable),
    "wcf_soap12_default_namespace": ("1.2", f"{S12}Sender", [f"{S12}InvalidPlant"],
                                     "Plant 9999 is not assigned to company code 1000",
                                     ErpRejected),
    "sap_soap11_business": ("1.1", f"{S11}Server", [],
                            "Deficit of SL Unrestricted-use 3 PC : 100-100 1042 0001",
                            ErpBusinessFault),
    "zeep_style_soap11": ("1.1", "fault-code", [], "fault-string", ErpRejected),
    "zeep_style_soap12": ("1.2", "fault-code", ["fault-subcode"], "us-error", ErpRejected),
    "soap12_unqualified_children": ("1.2", f"{S12}Receiver", [f"{{{ERP}}}Stock",
                                                              f"{{{ERP}}}Deficit"],
                                    "Deficit of 3 PC", ErpBusinessFault),
}


def fault_of(name: str) -> SoapFault:
    root = SafeXml(1 << 20).parse((FIXTURES / f"{name}.xml").read_bytes(), what=name)
    body = root.find(f"{{{SOAP11_ENV}}}Body")
    body = body if body is not None else root.find(f"{{{SOAP12_ENV}}}Body")
    assert body is not None
    fault = read_fault(body)
    assert fault is not None
    return fault


def test_every_fixture_is_used() -> None:
    assert {p.stem for p in FIXTURES.glob("*.xml")} == set(SHAPES)


@pytest.mark.parametrize("name", list(SHAPES))
def test_a_stack_s_fault_is_read_and_classified(name: str) -> None:
    version, code, subcodes, reason, expected = SHAPES[name]
    fault = fault_of(name)
    assert (fault.version, str(fault.code), [str(s) for s in fault.subcodes], fault.reason) == \
        (version, code, subcodes, reason)
    error = FaultClassifier(RULES).error(fault, operation="PostStockAdjustment")
    assert type(error) is expected, error
    assert error.context["fault_qnames"] == [code, *subcodes]
    assert fault.code.local in str(error)


def test_a_qname_rule_needs_the_namespace_not_just_the_local_name() -> None:
    # the same local name in another namespace is another code: the Server fault is retried
    foreign = SoapFault("1.2", QName(SOAP12_ENV, "Receiver"), (QName("urn:other", "Deficit"),),
                        "x", "")
    assert isinstance(FaultClassifier(RULES).error(foreign, operation="op"), ErpUnavailable)
    # while a local-name rule (``code``, as before) matches either
    by_local = FaultRules(business=[FaultRule(code="Deficit")])
    assert isinstance(FaultClassifier(by_local).error(foreign, operation="op"), ErpBusinessFault)
    # a rule in {namespace}local form needs no declared prefix
    clark = FaultRules(transient=[FaultRule(qname=f"{{{WCF}}}InternalServiceFault")])
    error = FaultClassifier(clark).error(fault_of("wcf_soap11_internal"), operation="op")
    assert isinstance(error, ErpUnavailable)
    without = FaultClassifier(FaultRules()).error(fault_of("wcf_soap11_internal"), operation="op")
    assert isinstance(without, ErpRejected)  # an unknown code: dead letter unless a rule says


@pytest.mark.parametrize(("qname", "problem"), [
    ("erp:Deficit", "prefix 'erp' of 'erp:Deficit' is not declared"),
    ("Deficit", "is not a qualified name"),
    ("{urn:x}", "is not a qualified name"),
])
def test_a_qname_rule_that_cannot_resolve_is_a_config_error(qname: str, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        FaultRules(namespaces={"erq": ERP}, business=[FaultRule(qname=qname)])
    assert problem in str(caught.value)
    if qname == "erp:Deficit":
        assert "did you mean 'erq'" in str(caught.value)


def test_a_default_namespace_server_fault_is_retried_at_the_sink(erp: ErpServer,
                                                                 make_sink: MakeSink) -> None:
    sink = make_sink()
    body = (FIXTURES / "soap11_default_namespace.xml").read_text()
    erp.plan.set(Injection(mode="canned", body=body, operation="PostStockAdjustment", count=1))
    envelope = posting(1)
    # When the ERP answers a Server fault written in the default-namespace style
    with pytest.raises(ErpUnavailable) as caught:
        sink.deliver(envelope)
    # Then it is read (code, text, detail) and retried, and the retry is delivered
    assert caught.value.context["fault_code"] == "Server"
    assert caught.value.context["fault_string"].startswith("Posting service unavailable")
    assert caught.value.context["fault_detail"] == "PostStockAdjustment 2310"
    sink.deliver(envelope.next_attempt())
    assert erp.state.document_count() == 1


def test_a_soap12_subcode_rule_dead_letters_at_the_sink(erp: ErpServer,
                                                        make_sink: MakeSink) -> None:
    sink = make_sink(port="StockPort12", extra=f"""
    faults:
      namespaces: {{fx: "{ERP}"}}
      business: [{{qname: "fx:Deficit"}}]""")
    body = (FIXTURES / "cxf_soap12_subcode.xml").read_text()
    erp.plan.set(Injection(mode="canned", body=body, operation="PostStockAdjustment"))
    with pytest.raises(ErpBusinessFault) as caught:
        sink.deliver(posting(1))
    assert caught.value.context["fault_qnames"] == [f"{S12}Receiver", f"{{{ERP}}}Deficit"]
    assert erp.state.document_count() == 0
