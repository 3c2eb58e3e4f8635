"""The console's FastAPI app: login, overview, dead letters, audit — HTML rendered on the server
(Jinja2, autoescaped), readable without JavaScript; one small script of ours refreshes the
overview. Every dead-letter read and action goes through
:class:`~integration_bus.deadletters.console.DeadLetterConsole` as the logged-in user, so roles,
masking and the audit are the CLI's; the page itself never writes SQL.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from integration_bus.errors import BusError, TransientError
from integration_bus.http_limits import HttpLimits
from integration_bus.http_server import api
from integration_bus.operators import AccessDenied, Operator
from integration_bus.runtime import Bus
from integration_bus.web.console import auth
from integration_bus.web.console.accounts import Accounts, LoginLimiter
from integration_bus.web.console.pages import Console

__all__ = ["Console", "make_app"]

log = structlog.get_logger("integration_bus.console")

SESSION_COOKIE = "bus_console"
# our own files only (no inline script or style, no third party), never framed, no referrer
# leaving the site, no content sniffing
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def make_app(bus: Bus, *, secret: str, lifetime: int = 8 * 3600,
             limiter: LoginLimiter | None = None, limits: HttpLimits | None = None,
             secure_cookie: bool = False, clock: Callable[[], float] = time.time) -> FastAPI:
    """The console of ``bus``. ``secret`` signs the session cookies (keep it the same across
    restarts and console processes); sessions end ``lifetime`` seconds after login."""
    from integration_bus.web.console import deadletters, files, progress, stock

    app = api(limits, title="integration-bus console")
    console = Console(bus, Accounts(bus.store.db), lifetime, limiter or LoginLimiter(), clock,
                      reloader=bus.reloader())
    app.add_middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                       max_age=lifetime, same_site="strict", https_only=secure_cookie)
    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    app.mount("/static", StaticFiles(packages=[("integration_bus.web.console", "static")]),
              name="static")

    @app.exception_handler(auth.LoginRequired)
    async def login_required(request: Request, exc: auth.LoginRequired) -> Response:
        if request.method != "GET":
            return HTMLResponse("log in first", status_code=401)
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(AccessDenied)
    async def denied(request: Request, exc: AccessDenied) -> Response:
        return _problem(request, 403, "Not allowed", str(exc))

    @app.exception_handler(BusError)
    async def bus_error(request: Request, exc: BusError) -> Response:
        if isinstance(exc, TransientError):  # the store or the broker is away: try later
            log.warning("console.unavailable", error=str(exc))
            return _problem(request, 503, "Unavailable",
                            "the store or the broker does not answer right now: nothing was "
                            "done; try again in a moment")
        return _problem(request, 400, "That did not work", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _problem(request, exc.status_code, "Refused", str(exc.detail))

    def _problem(request: Request, status: int, title: str, text: str) -> HTMLResponse:
        try:
            who: Operator | None = console.who(request)
        except auth.LoginRequired:
            who = None
        return console.render(request, "problem.html", who, status=status, title=title,
                              text=bus.redaction.text(text))

    @app.get("/health", response_class=PlainTextResponse)
    def health() -> str:
        """For a load balancer or a container healthcheck: the console answers (no login)."""
        return "ok\n"

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Response:
        return console.render(request, "login.html", None)

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = await request.form()
        auth.check_csrf(request, form)
        name, password = str(form.get("user", ""))[:200], str(form.get("password", ""))
        client = auth.client_of(request)
        if console.limiter.blocked(name, client):
            return console.render(request, "login.html", None, status=429, user=name,
                                  error="too many failed logins: wait a few minutes")
        who = await run_in_threadpool(console.accounts.authenticate, name, password,
                                      client=client)
        if who is None:
            console.limiter.failed(name, client)
            return console.render(request, "login.html", None, status=401, user=name,
                                  error="wrong user name or password")
        console.limiter.succeeded(name, client)
        auth.start_session(request, who, console.clock)
        log.info("console.login", user=who.name, role=who.role, client=client)
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form = await request.form()
        auth.check_csrf(request, form)
        who = console.who(request)
        console.accounts.logout(who, client=auth.client_of(request))
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        who = console.who(request)
        return console.render(request, "overview.html", who, **console.overview())

    @app.get("/overview/table", response_class=HTMLResponse)
    def overview_table(request: Request) -> Response:
        who = console.who(request)
        return console.render(request, "overview_tables.html", who, fragment=True,
                              **console.overview())

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request) -> Response:
        who = console.who(request)
        dlq = console.dlq(who)
        check = dlq.verify_audit()
        return console.render(request, "audit.html", who, rows=dlq.audit_log(limit=200),
                              check=check)

    @app.get("/trace", response_class=HTMLResponse)
    def trace(request: Request, id: str = "", key: str = "") -> Response:
        """An envelope's journal, its dead letters and its flow (the envelopes before and
        after it, across routes and sinks) — or every envelope of a business key: what
        ``bus trace [--key]`` shows, masked, through the same service."""
        who = console.who(request)
        ident, business_key = id.strip()[:64], key.strip()[:200]
        events: list[dict[str, Any]] = []
        dead: list[dict[str, Any]] = []
        family: dict[str, list[dict[str, Any]]] = {"ancestors": [], "descendants": []}
        flow: list[dict[str, Any]] = []
        dlq = console.dlq(who)
        if ident:
            events, dead = dlq.trace(ident)
            family = dlq.lineage(ident)
        elif business_key:
            flow = dlq.of_key(business_key)
        return console.render(request, "trace.html", who, ident=ident, key=business_key,
                              events=events, dead=dead, family=family, flow=flow)

    app.include_router(files.router(console))
    app.include_router(stock.router(console))
    app.include_router(progress.router(console))
    app.include_router(deadletters.router(console))
    return app


def new_secret() -> str:
    return secrets.token_urlsafe(48)
