"""Third-party WSDLs: SOAP-encoding imports load (the namespace is answered locally, nothing is
fetched); rpc/encoded operations are refused by name, literal ones work; every configured
element path is resolved against the WSDL's types to the leaf, with a did-you-mean."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors.soap_erp import SoapErpSink
from connectors.soap_erp.fakeerp import ErpServer
from connectors.soap_erp.wsdl import WsdlCache, operation_style
from integration_bus.cli import cli
from integration_bus.connector import ConfigError, PermanentError
from tests.soap_erp.support import open_bus, posting, sink_yaml, write_config

FIXTURES = Path(__file__).parent / "wsdls"
SOAP_ENC_IMPORT = ('<xsd:import namespace="http://schemas.xmlsoap.org/soap/encoding/" '
                   'schemaLocation="http://schemas.xmlsoap.org/soap/encoding/"/>')


def shop_project(root: Path, sinks: str) -> Path:
    """A project whose config ships the legacy shop WSDL and names ``sinks`` (YAML)."""
    (root / "config" / "shop").mkdir(parents=True)
    shutil.copy(FIXTURES / "legacy-shop-encoded.wsdl", root / "config" / "shop" / "shop.wsdl")
    (root / "config" / "bus.yaml").write_text(f"""broker: {{url: ""}}
store: {{url: sqlite:///var/bus.db}}
sources: {{}}
sinks:{sinks}
routes:
  comments: {{from: [order.commented], to: [shop]}}
""")
    return root / "config"


def shop_sink(operation: str, port: str = "LegacyShopPort", numbering: str = "null") -> str:
    return f"""
  shop:
    connector: soap_erp
    wsdl: config/shop/shop.wsdl
    service: LegacyShopService
    port: {port}
    operation: {operation}
    document_number: {numbering}
    lookup: null"""


def test_a_magento_style_encoded_wsdl_loads_with_its_styles_read() -> None:
    document = WsdlCache().load(FIXTURES / "legacy-shop-encoded.wsdl")
    ports = document.services["LegacyShopService"].ports
    encoded = ports["LegacyShopPort"].binding
    literal = ports["LegacyShopLiteralPort"].binding
    assert {name: operation_style(document, encoded, name) for name in encoded.all()} == {
        name: "rpc/encoded" for name in ("login", "orderInfo", "orderAddComment", "resources")}
    assert operation_style(document, literal, "orderAddComment") == "rpc/literal"


@pytest.mark.parametrize("operation", ["login", "orderInfo", "resources"])
def test_an_encoded_operation_is_refused_by_name_at_start(tmp_path: Path, operation: str) -> None:
    bus = open_bus(shop_project(tmp_path, shop_sink(operation)))
    try:
        with pytest.raises(ConfigError) as caught:
            bus.sink("shop")
    finally:
        bus.close()
    text = str(caught.value)
    assert f"operation {operation!r} of port LegacyShopService/LegacyShopPort is rpc/encoded" \
        in text and "will not send it as literal" in text
    assert caught.value.context["field"] == "operation"


def test_lint_build_names_the_encoded_operation_at_its_line(tmp_path: Path) -> None:
    config_dir = shop_project(tmp_path, shop_sink("orderInfo"))
    result = CliRunner().invoke(cli, ["lint", "--build", "--config-dir", str(config_dir)])
    assert result.exit_code == 2
    assert re.search(r"bus.yaml:\d+:\d+: sinks.shop.operation: operation 'orderInfo' of port "
                     r"\S+ is rpc/encoded", result.output), result.output


def test_literal_operations_of_the_same_wsdl_work_and_part_keys_are_explained(
        tmp_path: Path) -> None:
    bus = open_bus(shop_project(tmp_path, shop_sink("orderComment", "LegacyShopLiteralPort")))
    try:
        sink = bus.sink("shop")
        assert isinstance(sink, SoapErpSink)
        # a request keyed by the part name of an element-typed rpc part: refused before
        # sending, saying which key zeep expects
        request = posting(1).derive(type="order.commented", payload={
            "sessionId": "s", "orderIncrementId": "100000042",
            "comment": {"status": "processing", "comment": "packed"}})
        with pytest.raises(PermanentError) as caught:
            sink.deliver(request)
        assert caught.value.context["field"] == "comment"
        assert caught.value.context["hint"] == ("part 'comment' is sent as its element "
                                                "'orderComment': key the request by "
                                                "'orderComment'")
        sink.close()
    finally:
        bus.close()


def test_a_document_literal_wsdl_importing_soap_encoding_posts(tmp_path: Path,
                                                               erp: ErpServer) -> None:
    config_dir = write_config(tmp_path, "", sinks=sink_yaml(erp.url))
    types = config_dir / "erp" / "erp-types.xsd"
    text = types.read_text()
    head = text.index(">", text.index("<xsd:schema")) + 1
    types.write_text(text[:head] + SOAP_ENC_IMPORT + text[head:])
    assert SOAP_ENC_IMPORT in types.read_text()
    bus = open_bus(config_dir)
    try:
        sink = bus.sink("erp")
        sink.deliver(posting(1))
        sink.close()
    finally:
        bus.close()
    assert erp.state.document_count() == 1


@pytest.mark.parametrize(("setting", "message", "hint"), [
    ("numbering: '{field: DocumentHeader.ExternalRefrence}'",
     "'DocumentHeader.ExternalRefrence': DocumentHeader (DocumentHeader) has no element "
     "'ExternalRefrence'", "did you mean 'ExternalReference'?"),
    ("numbering: '{field: Item.NoSuch}'",
     "'Item.NoSuch': Item (MovementItem) has no element 'NoSuch'",
     "one of: AmountLC, Material, MovementType"),
    ("numbering: '{field: DocumentHeader.ExternalReference.Id}'",
     "is a simple value: it has no element 'Id'", None),
    ("numbering: '{field: Header.ExternalReference}'",
     "the request of PostStockAdjustment has no parameter 'Header'",
     "did you mean 'DocumentHeader'?"),
    ("lookup: '{operation: FindDocument, found: Document.DocumentNumbr}'",
     "'Document.DocumentNumbr'", "did you mean 'DocumentNumber'?"),
])
def test_configured_paths_are_resolved_to_the_leaf(tmp_path: Path, erp: ErpServer,
                                                   setting: str, message: str,
                                                   hint: str | None) -> None:
    key, value = setting.split(": ", 1)
    config_dir = write_config(tmp_path, "", sinks=sink_yaml(erp.url, **{key: value.strip("'")}))
    bus = open_bus(config_dir)
    try:
        with pytest.raises(ConfigError) as caught:
            bus.sink("erp")
    finally:
        bus.close()
    assert message in caught.value.message, caught.value
    if hint is not None:
        assert hint in str(caught.value.context["hint"]), caught.value


def test_lint_build_catches_a_nested_path_typo_with_a_did_you_mean(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    for part in ("config", "mappings", "schemas"):
        shutil.copytree(repo / part, tmp_path / part)
    (tmp_path / "var" / "pos" / "inbox").mkdir(parents=True)
    config = tmp_path / "config" / "bus.yaml"
    text = config.read_text()
    assert "field: DocumentHeader.ExternalReference" in text
    config.write_text(text.replace("field: DocumentHeader.ExternalReference",
                                   "field: DocumentHeader.ExternalRef", 1))
    result = CliRunner().invoke(cli, ["lint", "--build", "--config-dir", str(tmp_path / "config")])
    assert result.exit_code == 2
    assert re.search(r"bus.yaml:\d+:\d+: sinks.\w+.document_number.field: "
                     r"'DocumentHeader.ExternalRef': DocumentHeader \(DocumentHeader\) has no "
                     r"element 'ExternalRef'\n  hint: did you mean 'ExternalReference'\?",
                     result.output), result.output


@pytest.mark.parametrize(("field", "problem"), [
    ("orderComment.author.name", None),  # anonymous nested types, to the leaf
    ("comment.status", "part 'comment' is sent as its element 'orderComment'"),
    ("orderComment.author.nme", "did you mean 'name'?"),
])
def test_rpc_paths_resolve_through_element_parts(tmp_path: Path, field: str,
                                                 problem: str | None) -> None:
    numbering = f"{{field: {field}}}"
    bus = open_bus(shop_project(tmp_path, shop_sink("orderComment", "LegacyShopLiteralPort",
                                                    numbering)))
    try:
        if problem is None:
            bus.sink("shop").close()
            return
        with pytest.raises(ConfigError) as caught:
            bus.sink("shop")
        assert problem in str(caught.value.context["hint"]), caught.value
        assert caught.value.context["field"] == "document_number.field"
    finally:
        bus.close()


@pytest.mark.parametrize(("poll", "field", "problem"), [
    ("position: Sequense", "poll.position", "Change (Change) in the response of "
                                            "GetStockChanges has no element 'Sequense'"),
    ("items: Changes", "poll.items", "the response of GetStockChanges has no parameter "
                                     "'Changes'"),
    ("cursor_param: Since", "poll.cursor_param", "no parameter 'Since'"),
])
def test_a_poll_s_paths_are_resolved_too(tmp_path: Path, erp: ErpServer, poll: str,
                                         field: str, problem: str) -> None:
    sources = f"""
  stock:
    connector: soap_erp
    wsdl: config/erp/erp.wsdl
    service: ErpService
    port: StockPort
    address: "{erp.url}"
    poll: {{operation: GetStockChanges, {poll}}}"""
    bus = open_bus(write_config(tmp_path, "", sources=sources))
    try:
        with pytest.raises(ConfigError) as caught:
            bus.source("stock")
    finally:
        bus.close()
    assert problem in caught.value.message and caught.value.context["field"] == field
