"""A hostile ERP within the size cap: 1.5 million empty elements, a 9 MB fault string, garbage
under a gzip/deflate header. Each is a typed error with small, bounded cost."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.soap_erp.fakeerp import ErpServer, Injection
from connectors.soap_erp.faults import ErpUnavailable
from connectors.soap_erp.xmlsafe import SafeXml, XmlSecurityError
from integration_bus.connector import Envelope
from integration_bus.store.records import MAX_MESSAGE_CHARS, MAX_TRACEBACK_CHARS
from integration_bus.store.schema import journal
from tests.soap_erp.conftest import MakeSink
from tests.soap_erp.support import bus_running, open_bus, sink_yaml, write_config
from tests.support.hostile_http import Answer, HostileHttp
from tests.support.probe import wait_for

_RSS_PROBE = """
import json, resource, sys
from connectors.soap_erp.xmlsafe import SafeXml, XmlSecurityError
data = b"<r>" + b"<a/>" * 1_500_000 + b"</r>"  # 6 MB: under the 10 MB size cap
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    SafeXml().parse(data, what="answer")
    outcome = "parsed"
except XmlSecurityError as exc:
    outcome = exc.context["reason"]
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"outcome": outcome, "grown_kib": grown}))
"""


def test_a_million_empty_elements_are_refused_before_a_tree_is_built() -> None:
    # Given 1.5 million empty elements in 6 MB (a full lxml tree of them: ~180 MB of RSS),
    # When a fresh process parses them with the hardened parser (RSS measured there alone)
    done = subprocess.run([sys.executable, "-c", _RSS_PROBE], capture_output=True, text=True,
                          timeout=60, check=True)
    result = json.loads(done.stdout)
    # Then they are refused by the node cap, and the process grew by far less than a tree
    assert result["outcome"] == "limits"
    assert result["grown_kib"] < 40 * 1024, f"RSS grew by {result['grown_kib'] // 1024} MiB"


@pytest.mark.parametrize("body", [
    b"<r><a " + b" ".join(b"a%d='1'" % i for i in range(30_000)) + b"/></r>",
    b"<r>" + b"<x xmlns:p='urn:p'/>" * 20_000 + b"</r>",
    "<r>".encode("utf-16") + "<a/>".encode("utf-16-le") * 30_000 + "</r>".encode("utf-16-le"),
], ids=["attributes", "namespaces", "utf-16"])
def test_the_node_cap_counts_attributes_namespaces_and_other_encodings(body: bytes) -> None:
    with pytest.raises(XmlSecurityError, match="more than 25,000 elements and attributes"):
        SafeXml(max_nodes=25_000).parse(body, what="answer")
    SafeXml(max_nodes=100_000).parse(body, what="answer")  # under the cap: parsed as before


def test_a_document_with_many_equals_signs_in_text_is_not_refused() -> None:
    # '<' and '=' only decide the fast path; the count itself is of real nodes
    body = b"<r>" + b"<a>x=1=2=3=4</a>" * 5_000 + b"</r>"
    root = SafeXml(max_nodes=6_000).parse(body, what="answer")
    assert len(root) == 5_000


GARBLED = {"gzip": b"\x1f\x8b\x08\x00garbage that is not deflate",
           "deflate": b"\x78\x9cnot a deflate stream"}


@pytest.mark.parametrize("encoding", list(GARBLED))
def test_garbled_compression_from_the_erp_is_a_transient_in_doubt_error(
        make_sink: MakeSink, encoding: str) -> None:
    answer = Answer(headers={"Content-Type": "text/xml; charset=utf-8",
                             "Content-Encoding": encoding},
                    body=lambda: [GARBLED[encoding]])
    with HostileHttp(answer) as erp:
        host = erp.url.removeprefix("http://")
        sink = make_sink(url=f"http://bus:Erp-Pass-123@{host}/erp", operation="QueryStock",
                         numbering="null", lookup="null")
        envelope = Envelope.create("erp.stock.query", {"Material": "M", "Plant": "1042"},
                                   source="test")
        # When the ERP answers with bytes that are not what the header says,
        # Then the sink raises ErpUnavailable (retry; the call may have taken effect), not
        # zlib.error, naming the endpoint without its password
        with pytest.raises(ErpUnavailable) as caught:
            sink.deliver(envelope)
    error = caught.value
    assert error.context["in_doubt"] is True and error.context["outcome"] == "bad_encoding"
    assert f"http://{host}/erp" in error.message and encoding in error.message
    assert "Erp-Pass-123" not in error.message


def test_a_9_mb_fault_string_is_stored_clipped(tmp_path: Path, erp: ErpServer) -> None:
    # Given an ERP whose Server fault carries a 9 MB fault string, and a route that tries twice
    huge = "Deficit " + "x" * (9 * 1024 * 1024)
    erp.plan.set(Injection(mode="business_fault", operation="QueryStock", string=huge))
    routes = """
  queries:
    from: [erp.stock.query]
    to: [erp]
    retry: {max_attempts: 2, initial_delay: 100ms}"""
    sinks = sink_yaml(erp.url, operation="QueryStock", numbering="null", lookup="null",
                      extra="\n    concurrency: 1\n    max_response: 25165824")  # it repeats it
    bus = open_bus(write_config(tmp_path, "", sinks=sinks, routes=routes))
    try:
        publisher = bus.publisher()
        publisher.publish(Envelope.create("erp.stock.query", {"Material": "MAT-1",
                                                              "Plant": "1042"}, source="test"))
        publisher.close()
        started = time.perf_counter()
        # When the message fails twice and is dead-lettered
        with bus_running(bus):
            wait_for(lambda: len(bus.store.dead_letters()) == 1, timeout=60,
                     message="the message dead-lettered")
        (letter,) = bus.store.dead_letters()
        with bus.store.db.begin() as conn:
            rows = conn.execute(journal.select()).mappings().all()
    finally:
        bus.close()
    # Then message, traceback, attempts and journal hold kilobytes, not ~36 MB, and say so
    stored = (len(letter["message"]) + len(letter["traceback"] or "")
              + len(json.dumps(letter["attempts"])) + len(json.dumps([r["detail"] for r in rows],
                                                                     default=str)))
    assert stored < 4 * (MAX_MESSAGE_CHARS + MAX_TRACEBACK_CHARS), f"{stored:,} characters"
    assert len(letter["message"]) <= MAX_MESSAGE_CHARS + 100  # + "gave up after 2 attempt(s)"
    assert f"(truncated, {len(huge):,}"[:16] in letter["message"]
    assert letter["message"].startswith("gave up after 2 attempt(s): QueryStock: ERP fault")
    assert "Traceback" in letter["traceback"] and "truncated" in letter["traceback"]
    assert any(r["event"] == "retried" for r in rows)
    assert time.perf_counter() - started < 60
