"""The stock page: the last reconcile (ERP vs projection vs shop) per SKU and location with the
values that differ from the ERP's highlighted, an availability lookup in the projection, and a
button that runs a reconcile now (operator role; audited like the CLI's actions, a refusal
too). Every reconcile — ``bus reconcile``, the scheduler's, this button's — leaves its report in
the journal (:data:`integration_bus.reconcile.REPORT_EVENT`); the page shows the last one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from integration_bus.errors import BusError, ConfigError
from integration_bus.operators import AccessDenied, Operator
from integration_bus.reconcile import REPORT_EVENT, ReconcileReport, reconcile_bus
from integration_bus.runtime import Bus
from integration_bus.store import audit, business, utcnow
from integration_bus.web.console import auth

if TYPE_CHECKING:
    from integration_bus.web.console.pages import Console

__all__ = ["last_report", "reconcile_as", "router"]

_CHECKED = {"projection_on_hand": ("projection", "on_hand"),
            "projection_available": ("projection", "available"),
            "shop_available": ("shop", "available")}


def last_report(bus: Bus) -> dict[str, Any] | None:
    """The last reconcile's report (``ReconcileReport.to_dict()``, with ``at``), or None."""
    with bus.store.db.begin(read_only=True) as conn:
        last = business.last_event(conn, REPORT_EVENT)
    if last is None:
        return None
    report = dict(last["detail"])
    report["at"] = last["at"]
    for pair in report.get("mismatches", []):  # which cells to highlight
        pair["differs"] = [".".join(_CHECKED[c]) for c in pair.get("failed", [])
                           if c in _CHECKED]
    return report


def _audit(bus: Bus, who: Operator, *, target: str, count: int, outcome: str,
           detail: dict[str, Any] | None = None) -> None:
    with bus.store.db.begin() as conn:
        audit.append(conn, bus.store.db.dialect, at=utcnow(), actor=who.name, role=who.role,
                     action="reconcile", target=target, count=count, outcome=outcome,
                     detail=detail)


def reconcile_as(bus: Bus, who: Operator) -> ReconcileReport:
    """Run a reconcile with bus.yaml's ``reconcile:`` settings as ``who``: AccessDenied
    (audited) below the operator role; the run and its outcome are audited (a failed run
    too, then re-raised)."""
    settings = bus.config.settings.reconcile
    target = f"erp {settings.erp or '-'} shop {settings.shop or '-'}"
    if not who.may("reconcile"):
        _audit(bus, who, target=target, count=0, outcome="denied")
        who.require("reconcile")
    try:
        report = reconcile_bus(bus)
    except BusError as exc:
        _audit(bus, who, target=target, count=0, outcome="failed",
               detail={"error": bus.redaction.text(str(exc))})
        raise
    _audit(bus, who, target=target, count=report.mismatched, outcome="ok",
           detail={"compared": report.compared, "mismatched": report.mismatched})
    return report


def router(console: Console) -> APIRouter:
    pages = APIRouter()

    @pages.get("/stock", response_class=HTMLResponse)
    def stock(request: Request, sku: str = "") -> Response:
        who = console.who(request)
        who.require("read")
        wanted = sku.strip()[:128]
        levels = console.bus.stock.of_sku(wanted) if wanted else []
        return console.render(request, "stock.html", who, report=last_report(console.bus),
                              sku=wanted, levels=levels,
                              configured=bool(console.bus.config.settings.reconcile.erp
                                              and console.bus.config.settings.reconcile.shop))

    @pages.post("/stock/reconcile")
    async def run(request: Request) -> Response:
        form = await request.form()
        auth.check_csrf(request, form)
        who = console.who(request)
        try:
            report = await run_in_threadpool(reconcile_as, console.bus, who)
        except (AccessDenied, ConfigError):
            raise
        except BusError as exc:  # a system did not answer: say so on the page, nothing lost
            console.flash(request, f"reconcile failed: {console.bus.redaction.text(str(exc))}")
            return RedirectResponse("/stock", status_code=303)
        console.flash(request, f"reconciled: {report.mismatched} of {report.compared} pairs "
                               "differ")
        return RedirectResponse("/stock", status_code=303)

    return pages
