"""Dead-letter pages: groups → a filtered, paged list → one letter, and the actions (replay one,
some or a group; discard with a reason; edit-and-replay for admins). Each goes through
:class:`~integration_bus.deadletters.console.DeadLetterConsole` as the logged-in user."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from integration_bus.deadletters.console import DeadLetterConsole, EditRefused, payload_diff
from integration_bus.relay import OutboxRelay
from integration_bus.store.dead_letters import STATUSES, Selection
from integration_bus.web.console import auth

if TYPE_CHECKING:
    from integration_bus.web.console.pages import Console

__all__ = ["PAGE_SIZE", "router"]

PAGE_SIZE = 50
FILTERS = ("route", "error_type", "group", "since", "until", "text", "status")


def _moment(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"{name}: {value!r} is not a time like 2026-12-05T08:00") \
            from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _filters(params: Any) -> dict[str, str]:
    return {k: str(params[k]).strip()[:200] for k in FILTERS
            if params.get(k) and str(params[k]).strip()}


def selection_of(filters: dict[str, str], ids: tuple[str, ...] = ()) -> Selection:
    status = filters.get("status", "new")
    if status not in STATUSES:
        raise HTTPException(400, f"status {status!r} is not one of {', '.join(STATUSES)}")
    return Selection(ids=ids, route=filters.get("route"), error_type=filters.get("error_type"),
                     group=filters.get("group"), text=filters.get("text"),
                     since=_moment(filters.get("since"), "since"),
                     until=_moment(filters.get("until"), "until"), statuses=(status,))


def _chosen(form: FormData) -> tuple[tuple[str, ...], dict[str, str]]:
    """The ids ticked (or the one letter) and the filters (a group) an action is about; an
    action with neither is refused rather than applied to everything."""
    ids = tuple(str(v)[:64] for v in form.getlist("id") if str(v).strip())
    filters = _filters(form)
    if not ids and not filters.get("group"):
        raise HTTPException(400, "say which dead letters: tick some, or act on a group")
    return ids, filters


def _back(form: FormData) -> str:
    target = str(form.get("next") or "/dead-letters")
    # only our own pages: no open redirect through a crafted form
    ours = target.startswith(("/dead-letters", "/replays?")) and "//" not in target \
        and "\\" not in target
    return target if ours else "/dead-letters"


def router(console: Console) -> APIRouter:
    pages = APIRouter(prefix="/dead-letters")

    @pages.get("", response_class=HTMLResponse)
    def groups(request: Request) -> Response:
        who = console.who(request)
        filters = _filters(request.query_params)
        found = console.dlq(who).groups(selection_of(filters))
        return console.render(request, "groups.html", who, groups=found, filters=filters,
                              routes=sorted(console.bus.config.settings.routes))

    @pages.get("/list", response_class=HTMLResponse)
    def listing(request: Request) -> Response:
        who = console.who(request)
        filters = _filters(request.query_params)
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page = 1
        rows, total = console.dlq(who).find(selection_of(filters), limit=PAGE_SIZE,
                                            offset=(page - 1) * PAGE_SIZE)
        pages_total = max(1, -(-total // PAGE_SIZE))
        here = f"/dead-letters/list?{urlencode({**filters, 'page': page})}"
        return console.render(
            request, "list.html", who, rows=rows, total=total, page=page, pages=pages_total,
            filters=filters, here=here, routes=sorted(console.bus.config.settings.routes),
            link=lambda p: f"/dead-letters/list?{urlencode({**filters, 'page': p})}")

    @pages.get("/preview", response_class=HTMLResponse)
    def preview(request: Request) -> Response:
        """What replaying the chosen letters would do now (the current mapping's outputs and
        the ledger's verdict per sink), sending nothing; audited as a dry run."""
        who = console.who(request)
        ids = tuple(v[:64] for v in request.query_params.getlist("id") if v.strip())
        filters = _filters(request.query_params)
        if not ids and not filters.get("group"):
            raise HTTPException(400, "say which dead letters: an id or a group")
        chosen = dataclasses.replace(selection_of(filters, ids), statuses=("new",))
        to_route = request.query_params.get("to_route") or None
        console.current_mappings()
        shown, total = console.dlq(who).preview(chosen, to_route=to_route)
        return console.render(request, "preview.html", who, previews=shown, total=total,
                              ids=ids, filters=filters, to_route=to_route,
                              routes=sorted(console.bus.config.settings.routes))

    @pages.get("/export")
    def export(request: Request) -> Response:
        """The filtered dead letters as JSON lines, masked (audited as an export)."""
        who = console.who(request)
        filters = _filters(request.query_params)
        rows = console.dlq(who).rows_for_export(selection_of(filters), unmask=False)
        body = "".join(json.dumps(row, default=str, ensure_ascii=False) + "\n" for row in rows)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return Response(body, media_type="application/x-ndjson", headers={
            "Content-Disposition": f'attachment; filename="dead-letters-{stamp}.jsonl"',
            "Cache-Control": "no-store"})

    async def _with_reason(request: Request, done: str,
                           action: Callable[[DeadLetterConsole], Callable[..., int]]) -> Response:
        """Restore or discard the chosen letters: a reason is required (it is audited)."""
        form = await request.form()
        auth.check_csrf(request, form)
        who = console.who(request)
        ids, filters = _chosen(form)
        reason = str(form.get("reason", "")).strip()[:500]
        if not reason:
            raise HTTPException(400, f"say why they are {done} (the reason is audited)")
        count = await run_in_threadpool(action(console.dlq(who)),
                                        selection_of(filters, ids), reason)
        console.flash(request, f"{done} {count} dead letter(s)")
        return RedirectResponse(_back(form), status_code=303)

    @pages.post("/restore")
    async def restore(request: Request) -> Response:
        return await _with_reason(request, "restored", lambda dlq: dlq.restore)

    @pages.post("/purge")
    async def purge(request: Request) -> Response:
        form = await request.form()
        auth.check_csrf(request, form)
        who = console.who(request)
        try:
            days = float(str(form.get("days", "")))
        except ValueError:
            raise HTTPException(400, "days: a number of days, like 30") from None
        if not 0 <= days <= 36500:
            raise HTTPException(400, "days: between 0 and 36500")
        count = await run_in_threadpool(console.dlq(who).purge, timedelta(days=days),
                                        include_new=bool(form.get("include_new")))
        console.flash(request, f"purged {count} dead letter(s) older than {days:g} day(s)")
        return RedirectResponse("/dead-letters", status_code=303)

    @pages.get("/{ident}", response_class=HTMLResponse)
    def letter(request: Request, ident: str) -> Response:
        who = console.who(request)
        unmask = request.query_params.get("unmask") == "1"
        dlq: DeadLetterConsole = console.dlq(who)
        shown = dlq.show(ident, unmask=unmask)
        events, _ = dlq.trace(shown["envelope_id"])
        for replay in shown["replay_history"]:
            replay["events"] = dlq.trace(replay["envelope_id"])[0]
        return console.render(request, "letter.html", who, letter=shown, events=events,
                              unmasked=unmask)

    @pages.get("/{ident}/edit", response_class=HTMLResponse)
    def edit_page(request: Request, ident: str) -> Response:
        who = console.who(request)
        dlq = console.dlq(who)
        dlq.require("edit", ident)
        shown = dlq.show(ident, unmask=True)  # an edit needs the real payload: audited
        current = shown["edited_payload"] if shown["edited_payload"] is not None else \
            shown["envelope"].get("payload")
        return console.render(request, "edit.html", who, letter=shown,
                              text=json.dumps(current, indent=2, ensure_ascii=False))

    @pages.post("/{ident}/edit", response_class=HTMLResponse)
    async def edit(request: Request, ident: str) -> Response:
        form = await request.form()
        auth.check_csrf(request, form)
        who = console.who(request)
        dlq = console.dlq(who)
        await run_in_threadpool(dlq.require, "edit", ident)
        text = str(form.get("payload", ""))
        shown = await run_in_threadpool(dlq.show, ident)
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            return console.render(request, "edit.html", who, letter=shown, text=text,
                                  status=422, error=f"not JSON: {exc}", field=None)
        if form.get("diff"):  # show what would change; nothing stored, nothing checked yet
            real = await run_in_threadpool(dlq.show, ident, unmask=True)
            before = real["edited_payload"] if real["edited_payload"] is not None else \
                real["envelope"].get("payload")
            return console.render(request, "edit.html", who, letter=shown, text=text,
                                  diff=payload_diff(before, payload) or "(no change)")
        await run_in_threadpool(console.current_mappings)
        try:
            outcome = await run_in_threadpool(dlq.edit, ident, payload)
        except EditRefused as exc:
            return console.render(request, "edit.html", who, letter=shown, text=text,
                                  status=422, error=str(exc), field=exc.context.get("field"))
        note = f"edit stored (checked against {outcome.validated_against or 'no schema'})"
        if form.get("replay"):
            result = await run_in_threadpool(_replay, console, dlq,
                                             Selection(ids=(shown["id"],)))
            note += f"; {result}"
        console.flash(request, note)
        return RedirectResponse(f"/dead-letters/{shown['id']}", status_code=303)

    @pages.post("/replay")
    async def replay(request: Request) -> Response:
        form = await request.form()
        auth.check_csrf(request, form)
        who = console.who(request)
        ids, filters = _chosen(form)
        chosen = dataclasses.replace(selection_of(filters, ids), statuses=("new",))
        to_route = str(form.get("to_route") or "").strip() or None
        result = await run_in_threadpool(_replay, console, console.dlq(who), chosen, to_route)
        console.flash(request, result)
        return RedirectResponse(_back(form), status_code=303)

    @pages.post("/discard")
    async def discard(request: Request) -> Response:
        return await _with_reason(request, "discarded", lambda dlq: dlq.discard)

    return pages


def _replay(console: Console, dlq: DeadLetterConsole, chosen: Selection,
            to_route: str | None = None) -> str:
    """Enqueue the replays (audited by the dead-letter console); with RabbitMQ, publish them
    now as ``bus dlq replay`` does; embedded, the running ``bus run`` relays the outbox."""
    console.current_mappings()
    outcome = dlq.replay(chosen, to_route=to_route)
    text = f"queued {len(outcome.queued)} replay(s)"
    if to_route:
        text += f" to route {to_route}"
    if outcome.skipped:
        text += f", skipped {len(outcome.skipped)}: " + "; ".join(
            f"{ident}: {why}" for ident, why in outcome.skipped[:5])
    bus = console.bus
    if outcome.queued and not bus.transport.embedded:
        relay = OutboxRelay(bus.store, bus.publisher, dead_letter_ids=outcome.queued)
        relay.drain(lambda moved: None)
        text += f"; published {relay.published}"
    elif outcome.queued:
        text += " in the outbox (the running bus publishes them)"
    return text
