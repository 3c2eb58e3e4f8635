"""The client against the WSDL styles ERPs publish (document/literal wrapped, rpc/literal,
SOAP 1.1 and 1.2, imported XSDs, several services and ports), config errors at start-up, HTTP
basic auth, TLS verification, and the fake ERP serving its own WSDL."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from connectors.soap_erp.fakeerp import ErpServer, ErpState, FaultPlan
from connectors.soap_erp.fakeerp.cli import erp_command
from connectors.soap_erp.faults import ErpRejected, ErpUnavailable
from integration_bus.connector import ConfigError, Envelope
from tests.soap_erp.conftest import MakeSink
from tests.soap_erp.support import SECRETS, open_bus, posting, sink_yaml, write_config


def _reply_of(sink: object, envelope: Envelope) -> dict[str, object]:
    """Call the sink's operation and return the ERP's answer as the sink reads it."""
    return sink._call(envelope)  # type: ignore[attr-defined, no-any-return]


def test_document_literal_wrapped_soap11_and_soap12(erp: ErpServer, make_sink: MakeSink) -> None:
    query = Envelope.create("erp.stock.query", {"Material": "MAT-1", "Plant": "1042"},
                            source="test")
    for port in ("StockPort", "StockPort12"):
        sink = make_sink(port=port, operation="QueryStock", numbering="null", lookup="null")
        answer = _reply_of(sink, query)
        assert answer == {"Stock": [{"Material": "MAT-1", "Plant": "1042",
                                     "StorageLocation": "0001", "OnHand": Decimal(100),
                                     "Reserved": Decimal(0), "Available": Decimal(100)}]}
    soap12 = [body for _, op, body in erp.state.log if op == "QueryStock"][1]
    assert b"http://www.w3.org/2003/05/soap-envelope" in soap12


def test_rpc_literal_on_a_second_service_with_its_own_lookup(erp: ErpServer,
                                                             make_sink: MakeSink) -> None:
    sink = make_sink(service="LegacyErpService", port="LegacyPort",
                     operation="PostGoodsMovement", numbering="{field: reference}",
                     lookup="{operation: FindMovement, reference: reference, "
                            "found: documentNumber}")
    envelope = Envelope.create("erp.goods_movement.requested", {
        "reference": "placeholder", "material": "MAT-2", "plant": "1042",
        "storageLocation": "0001", "movementType": "551", "quantity": "4"},
        source="test", idempotency_key="gm-1")
    answer = _reply_of(sink, envelope)
    assert set(answer) == {"documentNumber"} and answer["documentNumber"] in erp.state.documents
    assert erp.state.query("MAT-2", "1042", "0001")[0][1].on_hand == 96
    assert sink.lookup(envelope) is True
    assert sink.lookup(Envelope.create("x", {}, source="t", idempotency_key="gm-2")) is False
    level = make_sink(service="LegacyErpService", port="LegacyPort", operation="GetStockLevel",
                      numbering="null", lookup="null")
    assert _reply_of(level, Envelope.create("q", {"material": "MAT-2", "plant": "1042",
                                                  "storageLocation": "0001"}, source="t")) == \
        {"onHand": Decimal(96), "available": Decimal(96)}
    rpc = next(body for _, op, body in erp.state.log if op == "PostGoodsMovement")
    assert b'<ns0:PostGoodsMovement xmlns:ns0="urn:retail:erp:legacy"><reference>' in rpc


@pytest.mark.parametrize(("options", "field", "text"), [
    ({"operation": "PostStockAdjusment"}, "operation", "did you mean 'PostStockAdjustment'"),
    ({"port": "StockPrt"}, "port", "did you mean 'StockPort'"),
    ({"service": "Nope"}, "service", "is not in the WSDL"),
    ({"lookup": "{operation: FindDocuments}"}, "lookup.operation", "FindDocument"),
    ({"numbering": "{field: Header.ExternalReference}"}, "document_number.field",
     "no parameter 'Header'"),
])
def test_config_mistakes_fail_at_start_naming_the_field(
        tmp_path: Path, erp: ErpServer, options: dict[str, Any], field: str, text: str) -> None:
    bus = open_bus(write_config(tmp_path, "", sinks=sink_yaml(erp.url, **options)))
    try:
        with pytest.raises(ConfigError) as caught:
            bus.sink("erp")
        assert caught.value.context["field"] == field and text in str(caught.value)
        assert caught.value.context["sink"] == "erp"
    finally:
        bus.close()


def test_config_model_refuses_a_lookup_without_numbering_and_bad_rules(tmp_path: Path,
                                                                        erp: ErpServer) -> None:
    for sinks, expected in (
            (sink_yaml(erp.url, numbering="null"), "set 'document_number'"),
            (sink_yaml(erp.url, extra="\n    faults: {business: [{code: '('}]}"),
             "not a regular expression"),
            (sink_yaml(erp.url, extra="\n    faults: {business: [{}]}"), "at least one"),
            (sink_yaml(erp.url).replace("    lookup: {operation: FindDocument}\n", ""),
             "lookup")):
        with pytest.raises(ConfigError, match=expected):
            open_bus(write_config(tmp_path, "", sinks=sinks))


def test_http_basic_auth(tmp_path: Path) -> None:
    with ErpServer(ErpState(), basic=("bus", SECRETS["ERP_PASSWORD"])) as erp:
        for extra, expected in (("", ErpRejected), (
                '\n    basic_auth: {username: bus, password: "${ERP_PASSWORD}"}', None)):
            bus = open_bus(write_config(tmp_path / str(bool(extra)), "",
                                        sinks=sink_yaml(erp.url, extra=extra)))
            sink = bus.sink("erp")
            try:
                if expected is None:
                    sink.deliver(posting(1))
                else:
                    with pytest.raises(expected, match="401"):
                        sink.deliver(posting(1))
            finally:
                sink.close()
                bus.close()
        assert erp.state.document_count() == 1


@pytest.fixture
def certificate(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True,
                   timeout=30)
    yield cert, key


def test_tls_is_verified_unless_told_otherwise(tmp_path: Path, make_sink: MakeSink,
                                              certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with ErpServer(ErpState(), tls=context) as erp:
        assert erp.url.startswith("https://")
        with pytest.raises(ErpUnavailable, match="TLS") as caught:
            make_sink(url=erp.url).deliver(posting(1))  # self-signed: not trusted
        assert caught.value.context["in_doubt"] is False
        make_sink(url=erp.url, extra=f"\n    tls: {{ca_file: {cert}}}").deliver(posting(2))
        make_sink(url=erp.url, extra="\n    tls: {verify: false}").deliver(posting(3))
        assert erp.state.document_count() == 2


def test_the_fake_erp_serves_its_wsdl_and_xsds(erp: ErpServer) -> None:
    wsdl = httpx.get(f"{erp.url}?wsdl", timeout=5)
    assert wsdl.status_code == 200 and f'location="http://127.0.0.1:{erp.port}' in wsdl.text
    assert f"{erp.url.rsplit('/', 1)[0]}/?xsd=erp-types.xsd" in wsdl.text
    assert "urn:retail:erp:common" in httpx.get(f"{erp.url}?xsd=erp-common.xsd", timeout=5).text
    assert httpx.get(f"{erp.url}?xsd=../../../etc/passwd", timeout=5).status_code == 404


def test_bus_sim_erp_runs_the_fake_erp(tmp_path: Path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text("- {mode: drop_after_commit, operation: PostStockAdjustment, every: 20, "
                      "count: 50}\n- {mode: slow, delay: 200ms}\n")
    assert len(FaultPlan.load(faults)._rules) == 2
    result = CliRunner().invoke(erp_command, ["--port", "0", "--materials", "3", "--duration",
                                              "0.2", "--faults", str(faults)])
    assert result.exit_code == 0, result.output
    assert "fake ERP on http://127.0.0.1:" in result.output and "3 materials" in result.output
    # by default it holds the reference scenario's stock (issue 14: MAT-... made sales fail)
    assert "12 stock rows of the reference scenario" in result.output
    bare = CliRunner().invoke(erp_command, ["--port", "0", "--no-scenario-stock", "--duration",
                                            "0"])
    assert bare.exit_code == 0 and "0 stock rows" in bare.output and "0 materials" in bare.output
    result = CliRunner().invoke(erp_command, ["--port", "0", "--wsse-user", "bus",
                                              "--password-env", "NO_SUCH_VARIABLE_SET"])
    assert result.exit_code == 2 and "NO_SUCH_VARIABLE_SET" in result.output
