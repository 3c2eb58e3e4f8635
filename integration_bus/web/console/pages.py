"""What every console page works with: :class:`Console` (the bus, accounts, templates, session
rules) and the templates' filters. Its own module so the pages and the app that mounts them
both import it, and no page imports the app."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from integration_bus.deadletters.console import DeadLetterConsole, pretty
from integration_bus.operators import Operator
from integration_bus.reload import MappingReloader
from integration_bus.runtime import Bus
from integration_bus.web.console import auth
from integration_bus.web.console.accounts import Accounts, LoginLimiter
from integration_bus.web.console.business import tiles
from integration_bus.web.console.overview import overview

__all__ = ["Console", "templates"]


def _when(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def templates() -> Jinja2Templates:
    env = Environment(loader=PackageLoader("integration_bus.web.console", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters.update(when=_when, pretty=pretty, age=_age)
    return Jinja2Templates(env=env)


@dataclass
class Console:
    """What every page needs: the bus, the accounts, the templates and the session rules."""

    bus: Bus
    accounts: Accounts
    lifetime: int
    limiter: LoginLimiter
    clock: Callable[[], float] = time.time
    pages: Jinja2Templates = field(default_factory=templates)
    reloader: MappingReloader | None = None
    overview_ttl: float = 2.0
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)
    _overview: tuple[float, dict[str, Any]] | None = None
    _overview_lock: threading.Lock = field(default_factory=threading.Lock)

    def overview(self) -> dict[str, Any]:
        """The overview's numbers, read at most once per ``overview_ttl`` seconds however many
        browsers poll (they count over the whole journal)."""
        with self._overview_lock:
            now = time.monotonic()
            if self._overview is None or now - self._overview[0] > self.overview_ttl:
                self._overview = (now, {**overview(self.bus), "tiles": tiles(self.bus)})
            return self._overview[1]

    def current_mappings(self) -> None:
        """Pick up mappings and schemas changed on disk since the last look, so a preview,
        an edit's validation and a replay use what ``bus run`` now runs (a broken change is
        refused and the previous versions stay, as in the bus)."""
        if self.reloader is not None:
            with self._reload_lock:
                self.reloader.check()

    def who(self, request: Request) -> Operator:
        return auth.current(request, self.accounts, self.lifetime, self.clock)

    def dlq(self, who: Operator) -> DeadLetterConsole:
        return DeadLetterConsole(self.bus, who)

    def render(self, request: Request, name: str, who: Operator | None, *,
               status: int = 200, fragment: bool = False, **context: Any) -> HTMLResponse:
        flash = request.session.pop("flash", None) if who is not None and not fragment \
            else None
        return self.pages.TemplateResponse(
            request, name, {"who": who, "csrf": auth.csrf_token(request), "flash": flash,
                            "mode": "embedded" if self.bus.transport.embedded else "rabbitmq",
                            **context}, status_code=status,
            headers={"Cache-Control": "no-store"})

    @staticmethod
    def flash(request: Request, text: str) -> None:
        request.session["flash"] = text
