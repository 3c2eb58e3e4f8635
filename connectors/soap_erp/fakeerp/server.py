"""The fake ERP on real HTTP: a threading HTTP/1.1 server (keep-alive) in a background thread.

- ``POST <any path>``: a SOAP call (see ``service``); the reply is written in one piece, or
  chunked for a streamed body; ``drop`` closes the socket without an answer (after the work,
  for ``drop_after_commit``).
- ``GET ?wsdl`` / ``GET ?xsd=NAME``: the WSDL (its soap:address locations pointing here) and its
  XSDs, as a real SOAP service publishes them. The connector itself never fetches them.

Lifecycle: ``ErpServer(...).start()`` (or ``with``) → ``url`` → ``stop()`` (wakes any injected
wait, closes the listening socket). Why not spyne: see docs/soap-erp.md ("The fake ERP").
"""

from __future__ import annotations

import base64
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from connectors.soap_erp.fakeerp.injection import FaultPlan
from connectors.soap_erp.fakeerp.service import ErpService, Reply
from connectors.soap_erp.fakeerp.state import ErpState

__all__ = ["WSDL_DIR", "ErpServer"]

#: the WSDL and XSDs of the fake ERP, shipped with the connector
WSDL_DIR = Path(__file__).resolve().parents[1] / "wsdl"
_MAX_REQUEST = 4 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HttpServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the ERP's state records every call."""

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        name = "erp.wsdl" if "wsdl" in query else (query.get("xsd") or [""])[0]
        if not re.fullmatch(r"[a-z0-9-]+\.(wsdl|xsd)", name) or not (WSDL_DIR / name).is_file():
            self._send(Reply(status=404, body=b"not found", content_type="text/plain"))
            return
        text = (WSDL_DIR / name).read_text()
        base = f"http://{self.headers.get('Host', 'localhost')}"
        text = re.sub(r'schemaLocation="([a-z0-9-]+\.xsd)"',
                      lambda m: f'schemaLocation="{base}/?xsd={m.group(1)}"', text)
        text = text.replace("http://erp.invalid", base)
        self._send(Reply(body=text.encode(), content_type="text/xml; charset=utf-8"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_REQUEST:
            self.close_connection = True
            self._send(Reply(status=413, body=b"request too large", content_type="text/plain"))
            return
        body = self.rfile.read(length)
        if self.server.basic is not None and self.headers.get("Authorization") != \
                self.server.basic:
            self._send(Reply(status=401, body=b"unauthorized", content_type="text/plain"))
            return
        reply = self.server.service.handle(body)
        if reply.drop:
            self._drop()
            return
        if reply.delay_after:
            self.server.stopping.wait(reply.delay_after)
        self._send(reply)

    def _drop(self) -> None:
        """Close without an answer (RST: linger 0), as a crashing ERP or a firewall does."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, reply: Reply) -> None:
        head = [f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}",
                f"Content-Type: {reply.content_type}", "Server: fake-erp"]
        if reply.content_encoding:
            head.append(f"Content-Encoding: {reply.content_encoding}")
        try:
            if isinstance(reply.body, bytes):
                head.append(f"Content-Length: {len(reply.body)}")
                self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + reply.body)
                return
            if reply.declared_length is not None:
                head.append(f"Content-Length: {reply.declared_length}")
            else:
                head.append("Transfer-Encoding: chunked")
            self.close_connection = True
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode())
            for chunk in reply.body:
                if reply.declared_length is None:
                    chunk = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
                self.wfile.write(chunk)
            if reply.declared_length is None:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away (it stopped reading a hostile answer)
            self.close_connection = True


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    block_on_close = False
    service: ErpService
    stopping: threading.Event
    basic: str | None


class ErpServer:
    """The fake ERP on ``host:port`` (0: any free port), serving ``state``. ``users``: require
    WS-Security (username -> password); ``basic``: require HTTP basic auth; ``tls``: HTTPS."""

    def __init__(self, state: ErpState | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, plan: FaultPlan | None = None,
                 users: dict[str, str] | None = None, basic: tuple[str, str] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.state = state or ErpState()
        self.plan = plan or FaultPlan()
        self.stopping = threading.Event()
        self._http = _HttpServer((host, port), _Handler)
        self._http.stopping = self.stopping
        #: the SOAP layer (tests may change ``service.users`` while it runs)
        self.service = ErpService(self.state, self.plan, wsdl_dir=WSDL_DIR, users=users,
                                  wait=self.stopping.wait, max_request=_MAX_REQUEST)
        self._http.service = self.service
        self._http.basic = None
        if basic is not None:
            token = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
            self._http.basic = f"Basic {token}"
        if tls is not None:  # HTTPS: the handshake happens as a connection is accepted
            self._http.socket = tls.wrap_socket(self._http.socket, server_side=True)
        self.host = host
        self.port = int(self._http.server_address[1])
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}/erp"
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={
            "poll_interval": 0.1}, name=f"fake-erp:{self.port}", daemon=True)

    def start(self) -> ErpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self._http.shutdown()
            self._thread.join(10)
        self._http.server_close()

    def __enter__(self) -> ErpServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
