"""``/admin/adjustments``: adjustments by status, approved, rejected or reverted by form.

The list is ``GET /v1/adjustments``'s (the adjustments view, ``adjustment_out``);
a decision runs ``AdjustmentService.decide`` as ``POST /v1/adjustments/{id}/{decision}``
does, with the session key (and the name typed, if any) as actor. A refusal (409
decided already, 404) is the API's, shown as an error page.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio.to_thread
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from api.admin.actions import admin_form
from api.admin.routes import page, signed_in
from api.auth import ServicesDep
from api.queries.adjustments import adjustment_out
from api.queries.cursors import decode_cursor, encode_cursor
from api.schemas import FieldError
from domain.adjusting import AdjustmentService

STATUSES = ("pending", "applied", "rejected", "reverted")
ADJUSTMENTS_PAGE = 100


@get("/adjustments", sync_to_thread=True)
def adjustments_page(
    request: Request[Any, Any, Any],
    svc: ServicesDep,
    status: FromQuery[str] = "pending",
    cursor: FromQuery[str | None] = None,
) -> Template:
    session = signed_in(request, svc)
    if status not in (*STATUSES, "all"):
        raise FieldError("status", "must be pending, applied, rejected, reverted or all")
    after = decode_cursor(cursor) if cursor is not None else None
    rows = svc.stores.views.adjustments.page(
        session.tenant_id, None if status == "all" else status, after, ADJUSTMENTS_PAGE
    )
    more = encode_cursor(rows[-1].position) if len(rows) == ADJUSTMENTS_PAGE else None
    return page(
        "adjustments.html",
        session,
        shown=status,
        statuses=(*STATUSES, "all"),
        adjustments=[adjustment_out(r) for r in rows],
        more=more,
    )


@post("/adjustments/{adjustment_id:str}/{decision:str}", status_code=303)
async def decide_adjustment(
    request: Request[Any, Any, Any],
    svc: ServicesDep,
    adjustment_id: FromPath[str],
    decision: FromPath[str],
) -> Response[Any]:
    """Approve, reject or revert, as the API's route does (and counted the same)."""
    action = await admin_form(request, svc)
    principal = action.principal
    try:
        target = UUID(adjustment_id)
    except ValueError:
        raise FieldError("id", "must be an adjustment id (a UUID)") from None
    reason = str(action.form.get("reason", ""))
    service = AdjustmentService(svc.stores.app)
    adjustment = await anyio.to_thread.run_sync(
        lambda: service.decide(decision, principal.tenant_id, target, action.actor, reason)
    )
    outcome = {"applied": "approved"}.get(adjustment.status.value, adjustment.status.value)
    svc.metrics.corrections.labels(outcome).inc()
    return Redirect(f"/admin/adjustments?status={adjustment.status.value}", status_code=303)
