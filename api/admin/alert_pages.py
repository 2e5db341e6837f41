"""``/admin/alerts``: the tenant's alerts and their open incidents, acknowledged by form.

The alerts are ``GET /v1/alerts``'s, the incidents ``GET /v1/alerts/{id}/incidents``'s
(the alerts view, ``alert_out`` and ``incident_out``); acknowledging runs
``AlertService.acknowledge`` as the API's route does, with the session key as actor.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio.to_thread
from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from api.admin.actions import admin_form
from api.admin.routes import page, signed_in
from api.auth import ServicesDep
from api.queries.alerts import alert_out, incident_out
from api.schemas import FieldError
from domain.alerting import AlertService


def _id(field: str, text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise FieldError(field, "must be an id (a UUID)") from None


@get("/alerts", sync_to_thread=True)
def alerts_page(request: Request[Any, Any, Any], svc: ServicesDep) -> Template:
    session = signed_in(request, svc)
    views = svc.stores.views.alerts
    alerts = [alert_out(r) for r in views.rules(session.tenant_id)]
    incidents = {
        a.id: [
            i
            for i in (incident_out(r) for r in views.incidents(session.tenant_id, UUID(a.id)))
            if i.status != "resolved"
        ]
        for a in alerts
    }
    return page("alerts.html", session, alerts=alerts, incidents=incidents)


@post("/alerts/{alert_id:str}/incidents/{incident_id:str}/acknowledge", status_code=303)
async def acknowledge_incident(
    request: Request[Any, Any, Any],
    svc: ServicesDep,
    alert_id: FromPath[str],
    incident_id: FromPath[str],
) -> Response[Any]:
    action = await admin_form(request, svc)
    alert, incident = _id("alertId", alert_id), _id("incidentId", incident_id)
    service = AlertService(svc.stores.app)
    tenant_id = action.principal.tenant_id
    await anyio.to_thread.run_sync(
        lambda: service.acknowledge(tenant_id, alert, incident, action.actor)
    )
    return Redirect("/admin/alerts", status_code=303)
