"""A hostile shop API: a 400 MB answer, a gzip bomb, garbage under gzip/deflate headers. The
client reads at most ``max_response`` bytes, memory stays small, and each case is a typed
error naming the limit or the endpoint (never its credentials)."""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib

import pytest
from prometheus_client import CollectorRegistry

from connectors.rest_shop.client import ClientPolicy, ShopClient
from connectors.rest_shop.config import AuthConfig, HttpTimeouts
from connectors.rest_shop.metrics import RestShopMetrics
from connectors.rest_shop.ratelimit import ShopPacer
from integration_bus.connector import ResponseTooLarge, TransientError
from tests.support.hostile_http import Answer, HostileHttp, zeros

LIMIT = 1 << 20
PASSWORD = "Sh0p-Secret-99"


def _client(url: str) -> ShopClient:
    return ShopClient(shop="acme", action="poll", base_url=url,
                      auth=AuthConfig(kind="basic", username="key", password=PASSWORD),
                      timeouts=HttpTimeouts(), pacer=ShopPacer(1000.0, 1000),
                      policy=ClientPolicy(max_attempts=2, backoff=1, max_retry_after=10,
                                          max_inline_wait=1000),
                      metrics=RestShopMetrics.of(CollectorRegistry()), sleep=lambda _: None,
                      max_response=LIMIT)


@pytest.mark.parametrize("announced", [False, True], ids=["streamed", "announced"])
def test_a_400_mb_answer_is_refused_at_the_limit_without_reading_it(announced: bool) -> None:
    total = 400 << 20
    headers = {"Content-Type": "application/json"}
    if announced:
        headers["Content-Length"] = str(total)
    with HostileHttp(Answer(headers=headers, body=zeros(total))) as shop:
        client = _client(shop.url)
        tracemalloc.start()
        started = time.perf_counter()
        try:
            # When the client GETs from a shop that answers 400 MB
            with pytest.raises(ResponseTooLarge) as caught:
                client.request("GET", "/orders.json", where={"envelope_id": "E1"})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            client.close()
    # Then the error names the limit, the shop and the endpoint, and nothing was retried
    error = caught.value
    assert error.context["limit"] == LIMIT and error.context["shop"] == "acme"
    assert error.context["envelope_id"] == "E1" and shop.requests == 1
    assert f"{LIMIT:,}" in str(error) and "/orders.json" in str(error)
    # And it stopped reading: memory stayed near the limit, the shop sent a fraction
    assert peak < 8 * LIMIT, f"Python allocations peaked at {peak / 1e6:.1f} MB"
    assert shop.sent < total // 4
    assert time.perf_counter() - started < 10


def test_a_gzip_bomb_is_inflated_only_up_to_the_limit() -> None:
    bomb = gzip.compress(bytes(64 << 20), compresslevel=9)  # ~64 KB that inflate to 64 MB
    with HostileHttp(Answer(headers={"Content-Type": "application/json",
                                     "Content-Encoding": "gzip"},
                            body=lambda: [bomb])) as shop:
        client = _client(shop.url)
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLarge):
                client.request("GET", "/orders.json")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            client.close()
    assert peak < 8 * LIMIT, f"Python allocations peaked at {peak / 1e6:.1f} MB"


GARBLED = {
    "gzip garbage": ("gzip", b"this is not gzip at all" * 10),
    "deflate garbage": ("deflate", b"\x78\x9c" + b"\xff" * 64),
    "gzip cut short": ("gzip", gzip.compress(b'{"orders": []}' * 100)[:40]),
    "unasked encoding": ("br", b"\x1b\x03\x00"),
}


@pytest.mark.parametrize("case", list(GARBLED))
def test_malformed_compression_is_a_transient_error_naming_the_endpoint(case: str) -> None:
    encoding, body = GARBLED[case]
    with HostileHttp(Answer(headers={"Content-Type": "application/json",
                                     "Content-Encoding": encoding},
                            body=lambda: [body])) as shop:
        host = shop.url.removeprefix("http://")
        client = _client(f"http://key:{PASSWORD}@{host}")
        try:
            # When every answer is garbled, Then after its attempts the client raises a
            # TransientError (retry later), not zlib.error, naming the endpoint
            with pytest.raises(TransientError) as caught:
                client.request("GET", "/orders.json", params={"token": PASSWORD})
        finally:
            client.close()
    text = str(caught.value)
    assert f"http://{host}/orders.json" in text and encoding in text
    assert PASSWORD not in text and PASSWORD not in repr(caught.value.context)
    assert shop.requests == 2  # a GET is retried like a dropped answer


def test_good_compressed_answers_still_read() -> None:
    document = b'{"orders": [{"id": 1}]}'
    for encoding, body in (("gzip", gzip.compress(document)),
                           ("deflate", zlib.compress(document)),
                           ("deflate", zlib.compress(document)[2:-4])):  # raw deflate
        with HostileHttp(Answer(headers={"Content-Type": "application/json",
                                         "Content-Encoding": encoding},
                                body=lambda body=body: [body])) as shop:
            client = _client(shop.url)
            try:
                response = client.request("GET", "/orders.json")
            finally:
                client.close()
        assert response is not None and response.json() == {"orders": [{"id": 1}]}
        assert "content-encoding" not in response.headers
