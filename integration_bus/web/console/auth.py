"""Who is logged in: the signed session cookie (starlette's SessionMiddleware: itsdangerous,
``HttpOnly``, ``SameSite=Strict``, ``Max-Age``), the CSRF token every form carries, and the
absolute session lifetime (the cookie is re-signed when a flash message is stored, so its own
age alone is not the bound: ``login_at`` is).

The role is read from the store on every request, so removing a user or changing their role
takes effect at once; the cookie carries only the name, the login time and the CSRF token.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request

from integration_bus.operators import Operator
from integration_bus.web.console.accounts import Accounts

__all__ = ["LoginRequired", "check_csrf", "client_of", "csrf_token", "current", "start_session"]


class LoginRequired(Exception):
    """No valid session: pages answer with a redirect to /login."""


def client_of(request: Request) -> str:
    return request.client.host if request.client else "-"


def csrf_token(request: Request) -> str:
    """This session's CSRF token (made on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, form: Any) -> None:
    """403 unless the form's ``csrf`` field is this session's token."""
    sent = form.get("csrf")
    expected = request.session.get("csrf")
    if not (isinstance(sent, str) and isinstance(expected, str)
            and secrets.compare_digest(sent, expected)):
        raise HTTPException(403, "the form's CSRF token is missing or not this session's: "
                                 "reload the page and try again")


def start_session(request: Request, who: Operator,
                  clock: Callable[[], float] = time.time) -> None:
    """A fresh session for ``who`` (nothing of the anonymous one survives: no fixation)."""
    request.session.clear()
    request.session.update({"user": who.name, "login_at": clock(),
                            "csrf": secrets.token_urlsafe(32)})


def current(request: Request, accounts: Accounts, lifetime: int,
            clock: Callable[[], float] = time.time) -> Operator:
    """The logged-in user with their role now; LoginRequired if none, expired or removed."""
    name, login_at = request.session.get("user"), request.session.get("login_at")
    if not isinstance(name, str) or not isinstance(login_at, int | float):
        raise LoginRequired()
    if clock() - login_at > lifetime:
        request.session.clear()
        raise LoginRequired()
    who = accounts.operator(name)
    if who is None:
        request.session.clear()
        raise LoginRequired()
    return who
