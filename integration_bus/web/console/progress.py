"""Live replay progress of a dead-letter group: its letters per status and its replays by stage
(waiting in the outbox, published, delivered, dead-lettered again). The page reads the same
without JavaScript (reload it); with it, the table refreshes itself by short polling of
``/replays/table``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from integration_bus.runtime import Bus
from integration_bus.store import business

if TYPE_CHECKING:
    from integration_bus.web.console.pages import Console

__all__ = ["router"]


def _progress(bus: Bus, group: str) -> dict[str, Any]:
    with bus.store.db.begin(read_only=True) as conn:
        found = business.replay_progress(conn, group)
    stages = found["stages"]
    settled = stages["delivered"] + stages["failed again"]
    return {**found, "group": group, "settled": settled,
            "done": found["replays"] > 0 and settled == found["replays"],
            "outbox": bus.store.outbox_waiting(), "embedded": bus.transport.embedded}


def _group(request: Request) -> str:
    group = request.query_params.get("group", "").strip()[:64]
    if not group:
        raise HTTPException(400, "say which group: /replays?group=FINGERPRINT")
    return group


def router(console: Console) -> APIRouter:
    pages = APIRouter(prefix="/replays")

    @pages.get("", response_class=HTMLResponse)
    def replays(request: Request) -> Response:
        who = console.who(request)
        who.require("read")
        return console.render(request, "replays.html", who,
                              **_progress(console.bus, _group(request)))

    @pages.get("/table", response_class=HTMLResponse)
    def table(request: Request) -> Response:
        who = console.who(request)
        who.require("read")
        return console.render(request, "replays_table.html", who, fragment=True,
                              **_progress(console.bus, _group(request)))

    return pages
