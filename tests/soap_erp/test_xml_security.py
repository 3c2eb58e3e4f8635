"""Hostile XML from the ERP: XXE (file and network), billion laughs, any DOCTYPE, a 50 MB body
(streamed, announced, or gzip-compressed), 10,000-deep nesting, 400,000 empty elements under
the size cap — each refused in under a second
with XmlSecurityError, the canary file's content nowhere, memory small. The parser is also
checked on its own and on the WSDL path."""

from __future__ import annotations

import resource
import socket
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.soap_erp.fakeerp import ErpServer, Injection
from connectors.soap_erp.fakeerp.hostile import hostile_body
from connectors.soap_erp.fakeerp.injection import Payload
from connectors.soap_erp.xmlsafe import SafeXml, XmlMalformedError, XmlSecurityError
from integration_bus.connector import ConfigError, Envelope
from integration_bus.store.schema import journal
from tests.soap_erp.conftest import MakeSink
from tests.soap_erp.support import bus_running, open_bus, sink_yaml, write_config
from tests.support.probe import wait_for

PAYLOADS: list[Payload] = ["xxe_file", "xxe_network", "billion_laughs", "doctype", "huge",
                           "huge_declared", "deep", "wide", "gzip_bomb"]


class Listener:
    """A TCP listener that only counts connections: where a network XXE would call."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/xxe"
        self.hits = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    secret = f"CANARY-{uuid.uuid4().hex}"
    path = tmp_path / "canary.txt"
    path.write_text(secret)
    yield path, secret


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


def _query(material: str = "MAT-1") -> Envelope:
    return Envelope.create("erp.stock.query", {"Material": material, "Plant": "1042"},
                           source="test")


def _inject(erp: ErpServer, payload: Payload, canary: Path, listener: Listener) -> None:
    target = str(canary) if payload == "xxe_file" else listener.url
    erp.plan.set(Injection(mode="hostile", operation="QueryStock", payload=payload,
                           target=target))


def test_each_hostile_answer_is_refused_fast_without_leaking_or_growing(
        capsys: pytest.CaptureFixture[str], erp: ErpServer, make_sink: MakeSink,
        canary: tuple[Path, str], listener: Listener) -> None:
    # capsys first, so it is torn down after the servers and sinks whose threads may log
    path, secret = canary
    sink = make_sink(operation="QueryStock", numbering="null", lookup="null",
                     extra="\n    max_response: 2097152")
    sink.deliver(_query())  # warm up: connections, zeep, parser
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        for payload in PAYLOADS:
            # Given the ERP answers with a hostile body
            _inject(erp, payload, path, listener)
            started = time.perf_counter()
            # When the sink calls it, Then the answer is refused, fast, as a security error
            with pytest.raises(XmlSecurityError) as caught:
                sink.deliver(_query())
            took = time.perf_counter() - started
            assert took < 1.0, f"{payload} took {took:.2f} s"
            error = caught.value
            assert error.context["operation"] == "QueryStock", payload
            assert error.context["reason"] in ("doctype", "size", "limits"), payload
            assert secret not in str(error) and secret not in repr(error.context)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before  # KiB
    assert peak < 8 * 1024 * 1024, f"Python allocations peaked at {peak / 1e6:.1f} MB"
    assert grown < 64 * 1024, f"the process grew by {grown / 1024:.0f} MiB"
    assert listener.hits == 0  # the network XXE never called out
    out = capsys.readouterr()
    assert secret not in out.out + out.err
    erp.plan.clear()
    sink.deliver(_query())  # the client is fine afterwards


def test_hostile_answers_go_to_the_dead_letters_at_once_without_the_canary(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, erp: ErpServer,
        canary: tuple[Path, str], listener: Listener) -> None:
    # capsys first, so it is torn down after the servers and the bus whose threads may log
    path, secret = canary
    routes = """
  queries:
    from: [erp.stock.query]
    to: [erp]
    retry: {max_attempts: 5, initial_delay: 100ms}"""
    sinks = sink_yaml(erp.url, operation="QueryStock", numbering="null", lookup="null",
                      extra="\n    max_response: 2097152\n    concurrency: 1")
    bus = open_bus(write_config(tmp_path, "", sinks=sinks, routes=routes))
    rules = []
    for payload in PAYLOADS:
        target = str(path) if payload == "xxe_file" else listener.url
        rules.append(Injection(mode="hostile", operation="QueryStock",
                               when=f"HOSTILE-{payload}-X", payload=payload, target=target))
    erp.plan.set(*rules)
    publisher = bus.publisher()
    publisher.publish_many([_query(f"HOSTILE-{p}-X") for p in PAYLOADS])
    publisher.close()
    try:
        with bus_running(bus):
            wait_for(lambda: len(bus.store.dead_letters()) == len(PAYLOADS), timeout=30,
                     message="every hostile answer dead-lettered")
        letters = bus.store.dead_letters()
        assert {d["error_type"] for d in letters} == {"XmlSecurityError"}
        for payload in PAYLOADS:  # one call each: a hostile answer is never retried
            assert erp.state.count("QueryStock", f"HOSTILE-{payload}-X") == 1, payload
        assert bus.store.count_events("retried", route="queries") == 0
        with bus.store.db.begin() as conn:
            journal_rows = conn.execute(journal.select()).mappings().all()
        assert journal_rows and secret not in repr(letters) + repr(journal_rows)
        assert listener.hits == 0
        out = capsys.readouterr()
        assert secret not in out.out + out.err
    finally:
        bus.close()


@pytest.mark.parametrize("payload", ["xxe_file", "xxe_network", "billion_laughs", "doctype",
                                     "deep"])
def test_the_parser_alone_refuses_each_trick(payload: str, canary: tuple[Path, str],
                                             listener: Listener) -> None:
    path, secret = canary
    body = hostile_body(payload, str(path) if payload == "xxe_file" else listener.url)
    assert isinstance(body, bytes)
    for data in (body, body.decode().replace('<?xml version="1.0"?>',
                                             '<?xml version="1.0" encoding="UTF-16"?>')
                 .encode("utf-16")):
        started = time.perf_counter()
        with pytest.raises(XmlSecurityError) as caught:
            SafeXml().parse(data, what="answer")
        assert time.perf_counter() - started < 1.0
        assert secret not in str(caught.value)
    assert listener.hits == 0


def test_the_parser_caps_size_and_keeps_good_xml() -> None:
    xml = SafeXml(max_bytes=4096)
    with pytest.raises(XmlSecurityError, match="over the cap"):
        xml.parse(b"<a>" + b"x" * 5000 + b"</a>", what="answer")
    root = xml.parse(b'<?xml version="1.0"?><!-- ok --><a><b>1</b></a>', what="answer")
    assert root.findtext("b") == "1"
    with pytest.raises(XmlMalformedError) as caught:
        xml.parse(b"<a><b></a>", what="answer", operation="QueryStock")
    assert caught.value.context["operation"] == "QueryStock"
    with pytest.raises(XmlMalformedError, match="not defined"):
        xml.parse(b"<a>&undeclared;</a>", what="answer")  # no DTD: no entity to expand


def test_a_wsdl_with_a_doctype_or_a_remote_import_is_refused_at_start(
        tmp_path: Path, erp: ErpServer, canary: tuple[Path, str]) -> None:
    path, secret = canary
    config_dir = write_config(tmp_path, "", sinks=sink_yaml(erp.url))
    wsdl = config_dir / "erp" / "erp.wsdl"
    original = wsdl.read_text()
    wsdl.write_text(original.replace(
        "<wsdl:definitions",
        f'<!DOCTYPE wsdl:definitions [<!ENTITY x SYSTEM "file://{path}">]>\n<wsdl:definitions',
        1))
    bus = open_bus(config_dir)
    try:
        with pytest.raises(ConfigError) as caught:
            bus.sink("erp")
        assert "DOCTYPE" in str(caught.value) and secret not in str(caught.value)
        assert isinstance(caught.value.__cause__, XmlSecurityError)
        wsdl.write_text(original.replace('schemaLocation="erp-types.xsd"',
                                         f'schemaLocation="{erp.url}?xsd=erp-types.xsd"'))
        with pytest.raises(ConfigError, match="never fetched"):
            bus.sink("erp")
        wsdl.write_text(original.replace('schemaLocation="erp-types.xsd"',
                                         'schemaLocation="../../../etc/erp-types.xsd"'))
        with pytest.raises(ConfigError, match="outside its directory"):
            bus.sink("erp")
        assert erp.state.calls == {}  # nothing was asked of the ERP
    finally:
        bus.close()
