"""The invoice-line audit page, ``/admin/audit``: ``GET /v1/audit/invoice`` laid out.

The page calls the API's own query (api/queries/audit.py) with the same
parameters, so the counter, each push and the events it covered are the
numbers the API answers with; ``push`` and ``cursor`` page one push's events.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromQuery
from litestar.response import Template

from api.admin.routes import page, signed_in
from api.auth import ServicesDep
from api.queries.audit import build_audit
from api.queries.meters import list_meters


@get("/audit", sync_to_thread=True)
def audit_page(
    request: Request[Any, Any, Any],
    svc: ServicesDep,
    customer: FromQuery[str] = "",
    metric: FromQuery[str] = "",
    period: FromQuery[str] = "",
    push: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Template:
    """The form to pick an invoice line and, once one is picked, its audit."""
    session = signed_in(request, svc)
    metrics = [m.name for m in list_meters(svc.stores.app, session.tenant_id)]
    audit = None
    if customer and metric:
        audit = build_audit(
            svc.stores, session.tenant_id, customer, metric, period or None, push, cursor
        )
    return page(
        "audit.html",
        session,
        audit=audit,
        metrics=metrics,
        customer=customer,
        metric=metric,
        period=period,
    )


PAGES: list[HTTPRouteHandler] = [audit_page]  # added to ``admin_router``
