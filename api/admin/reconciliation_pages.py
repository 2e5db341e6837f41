"""The reconciliation page, ``/admin/reconciliation``, and repair with a preview first.

The report shown is ``GET /v1/reconciliation/{month}``'s (the latest run of the
month, through the same ``report_out``). A repair is two POST forms, each with
the session's CSRF token and only for an ``admin`` session:

- *preview* runs the reconciliation without repair (as ``POST
  /v1/reconciliation/run`` with ``repair: false`` does: Stripe is read, a report
  is saved, nothing is pushed) and lists the lines a repair would act on, chosen
  by the reconciler's own ``repairable``: for each, Stripe's total now and the
  local counter a repair pushes Stripe to;
- *confirm* runs the real repair (``repair: true``), acting as the session's key
  (after the name typed in the form, if any), and shows the report it returns.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Request, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromQuery
from litestar.response import Template

from adapters.reconciler import Scope, repairable
from adapters.reconciliation_reports import Report
from api.admin.actions import AdminAction, admin_form
from api.admin.routes import page, signed_in
from api.auth import ServicesDep
from api.queries.reconciliation import month_of, report_out
from api.services import Services


def _month(svc: Services, month: str) -> str:
    """The month named (``YYYY-MM``), or the one the service's clock is in."""
    return month_of("month", month or svc.clock().strftime("%Y-%m"))


@get("/reconciliation", sync_to_thread=True)
def reconciliation_page(
    request: Request[Any, Any, Any], svc: ServicesDep, month: FromQuery[str] = ""
) -> Template:
    """The month's latest report, its lines with their statuses and causes."""
    session = signed_in(request, svc)
    chosen = _month(svc, month)
    report = svc.stores.views.reports.latest(session.tenant_id, chosen)
    return page(
        "reconciliation.html",
        session,
        month=chosen,
        report=None if report is None else report_out(report),
        repaired=False,
    )


def _run(svc: Services, action: AdminAction, month: str, repair: bool) -> Report | None:
    """One reconciliation of the session's tenant and month, as ``POST
    /v1/reconciliation/run`` makes it, recorded with the action's actor. None: the
    tenant has no period starting in that month."""
    reports = svc.reconciliation().reconciler.run(
        Scope(action.session.tenant_id, month),
        repair=repair,
        actor=action.actor,
        trigger="admin",
    )
    return reports[0] if reports else None


@post("/reconciliation/preview", status_code=200)
async def preview_repair(request: Request[Any, Any, Any], svc: ServicesDep) -> Template:
    """What a repair would push, line by line, from a reconciliation run now (no push)."""
    action = await admin_form(request, svc)
    session, month = action.session, _month(svc, str(action.form.get("month", "")))
    report = await anyio.to_thread.run_sync(_run, svc, action, month, False)
    out = None if report is None else report_out(report)
    repairs = (
        []
        if report is None or out is None
        else [o for o, line in zip(out.lines, report.lines, strict=True) if repairable(line)]
    )
    return page(
        "reconciliation_preview.html",
        session,
        month=month,
        report=out,
        repairs=repairs,
        actor_name=action.name,
    )


@post("/reconciliation/repair", status_code=200)
async def confirm_repair(request: Request[Any, Any, Any], svc: ServicesDep) -> Template:
    """Run the repair (``repair: true``) and show the report it returns."""
    action = await admin_form(request, svc)
    session, month = action.session, _month(svc, str(action.form.get("month", "")))
    report = await anyio.to_thread.run_sync(_run, svc, action, month, True)
    return page(
        "reconciliation.html",
        session,
        month=month,
        report=None if report is None else report_out(report),
        repaired=True,
    )


PAGES: list[HTTPRouteHandler] = [reconciliation_page, preview_repair, confirm_repair]
