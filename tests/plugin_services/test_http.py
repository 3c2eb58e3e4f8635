"""The ASGI server runner and the HTTP client factory of the connector API, together on real
loopback sockets: real uvicorn in a thread, real httpx."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest
from fastapi import Request

from integration_bus.connector import (
    HttpLimits,
    HttpServer,
    HttpTimeouts,
    TransientError,
    http_api,
    http_client,
)
from tests.support.probe import wait_for


def _echo_app() -> object:
    app = http_api(HttpLimits())

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, object]:
        return {"body": (await request.body()).decode(),
                "headers": {k: v for k, v in request.headers.items()
                            if k in ("accept-encoding", "user-agent", "x-partner",
                                     "authorization")}}

    @app.get("/moved")
    def moved() -> object:
        from fastapi.responses import RedirectResponse
        return RedirectResponse("http://example.invalid/elsewhere", status_code=302)

    return app


def _server() -> HttpServer:
    return HttpServer(_echo_app(), host="127.0.0.1", port=0,  # type: ignore[arg-type]
                      limits=HttpLimits(shutdown_grace=1000), name="test")


def test_start_serves_on_a_free_port_and_stop_releases_it() -> None:
    server = _server()
    assert server.start() is server
    port = server.port
    assert port and server.url == f"http://127.0.0.1:{port}" and server.listening.is_set()
    with http_client(HttpTimeouts()) as client:
        assert client.post(f"{server.url}/echo", content=b"hi").json()["body"] == "hi"
    server.stop()
    server.stop()  # idempotent
    assert server.join(0) and not server.listening.is_set()
    with pytest.raises(httpx.ConnectError), http_client(HttpTimeouts(connect="1s")) as client:
        client.get(f"http://127.0.0.1:{port}/echo")


def test_a_shared_stop_event_ends_it_too() -> None:
    stop = threading.Event()
    server = _server().start(stop)
    stop.set()
    wait_for(lambda: server.join(0), timeout=15, message="the server thread to end")


def test_the_context_manager_starts_and_stops() -> None:
    with _server() as server, http_client(HttpTimeouts(), base_url=server.url) as client:
        assert client.post("/echo", content=b"x").status_code == 200
    assert server.join(0)


def test_a_port_in_use_is_a_transient_error_naming_the_field() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        server = HttpServer(_echo_app(), host="127.0.0.1",  # type: ignore[arg-type]
                            port=taken.getsockname()[1], limits=HttpLimits(), name="t",
                            field="webhooks.port")
        with pytest.raises(TransientError) as caught:
            server.start()
        assert caught.value.context["field"] == "webhooks.port"
        assert "cannot listen on 127.0.0.1" in caught.value.message
    finally:
        taken.close()


def test_the_url_is_refused_before_binding() -> None:
    with pytest.raises(RuntimeError, match="not bound"):
        _ = _server().url


def test_clients_send_the_bus_headers_and_their_own() -> None:
    with _server() as server, http_client(
            HttpTimeouts(), base_url=server.url, headers={"X-Partner": "shop-1"},
            auth=httpx.BasicAuth("u", "p")) as client:
        seen = client.post("/echo", content=b"").json()["headers"]
    assert seen["user-agent"] == "integration-bus"
    assert seen["accept-encoding"] == "gzip, deflate"
    assert seen["x-partner"] == "shop-1" and seen["authorization"].startswith("Basic ")


def test_a_redirect_is_an_answer_never_followed() -> None:
    with _server() as server, http_client(HttpTimeouts(), base_url=server.url) as client:
        answer = client.get("/moved")
    assert answer.status_code == 302 and answer.headers["location"].endswith("/elsewhere")


def test_timeouts_and_pool_come_from_the_bus_limits() -> None:
    with http_client(HttpTimeouts.from_millis(connect=1000, read=2000, write=3000, pool=4000),
                     max_connections=3) as client:
        assert client.timeout == httpx.Timeout(connect=1.0, read=2.0, write=3.0, pool=4.0)
        assert client.follow_redirects is False


def test_a_silent_server_is_cut_off_by_the_read_timeout() -> None:
    # Given a listener that accepts and never answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        # When a client under a short read timeout asks it
        with http_client(HttpTimeouts(read="200ms")) as client, \
                pytest.raises(httpx.ReadTimeout):
            client.get(f"http://127.0.0.1:{silent.getsockname()[1]}/")
        # Then it gave up (ReadTimeout) instead of waiting forever
    finally:
        silent.close()


def test_the_pool_never_opens_more_than_max_connections() -> None:
    # Given a server that counts the connections it sees
    with _server() as server, http_client(HttpTimeouts(pool="10s"), base_url=server.url,
                                          max_connections=2) as client:
        ports: set[int] = set()
        lock = threading.Lock()

        def call() -> None:
            response = client.post("/echo", content=b"x")
            stream = response.extensions["network_stream"]
            with lock:
                ports.add(stream.get_extra_info("client_addr")[1])

        threads = [threading.Thread(target=call) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
    # Then at most two local ports (connections) were ever used
    assert 1 <= len(ports) <= 2


def test_a_bad_pool_size_is_refused() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        http_client(HttpTimeouts(), max_connections=0)


def test_timeouts_in_code_are_milliseconds_and_in_config_seconds() -> None:
    assert HttpTimeouts.from_millis(connect=250, read=1, write=2, pool=3).connect == 250
    assert HttpTimeouts.model_validate({"connect": 2}).connect == 2000
