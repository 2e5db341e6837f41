"""/v1/alerts: usage alert rules per tenant, and their incidents (docs/usage-alerts.md).

Reading needs the ``read`` scope; creating, replacing, deleting and
acknowledging, ``admin``. Another tenant's alert or incident is 404.
"""

from __future__ import annotations

from uuid import UUID

import anyio.to_thread
from litestar import Response, delete, get, post, put
from litestar.params import FromPath, JSONBody

from api.alert_schemas import (
    AcknowledgeIn,
    AlertIn,
    AlertOut,
    AlertPage,
    AlertReplacement,
    IncidentOut,
    IncidentPage,
)
from api.auth import PrincipalDep, ServicesDep, requires
from api.controller import V1Controller
from api.problems import error_responses
from api.queries.alerts import alert_out, incident_out
from api.routes.reconciliation import actor_of
from api.schemas import FieldError, quantity_of
from domain.alerting import AlertService
from domain.alerts import AlertSpec
from domain.tenancy import Principal, Scope


def _id(field: str, text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise FieldError(field, "must be an id (a UUID)") from None


def _spec(
    service: AlertService, principal: Principal, data: AlertIn | AlertReplacement
) -> AlertSpec:
    return service.spec(
        principal.tenant_id,
        metric=data.metric,
        customer_ref=data.customer_ref,
        kind=data.kind,
        threshold=quantity_of(data.threshold, "threshold"),
        basis=data.basis,
        currency=data.currency,
        enabled=data.enabled,
        cooldown_seconds=data.cooldown_seconds,
    )


class AlertsController(V1Controller):
    path = "/v1/alerts"
    tags = ["alerts"]

    @post(guards=[requires(Scope.ADMIN)], responses=error_responses(400, 401, 403, 422))
    async def create_alert(
        self, svc: ServicesDep, principal: PrincipalDep, data: JSONBody[AlertIn]
    ) -> Response[AlertOut]:
        """Create an alert; it is evaluated against the usage counted so far, then whenever
        the counters change."""
        service = AlertService(svc.stores.app)

        def create() -> AlertOut:
            return alert_out(service.create(principal.tenant_id, _spec(service, principal, data)))

        return Response(await anyio.to_thread.run_sync(create), status_code=201)

    @get(guards=[requires(Scope.READ)], sync_to_thread=True, responses=error_responses(401, 403))
    def list_alerts(self, svc: ServicesDep, principal: PrincipalDep) -> AlertPage:
        """The tenant's alerts, oldest first (as the projection worker has seen them)."""
        rows = svc.stores.views.alerts.rules(principal.tenant_id)
        return AlertPage([alert_out(r) for r in rows])

    @get(
        "/{alert_id:str}",
        guards=[requires(Scope.READ)],
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 404, 422),
    )
    def get_alert(
        self, svc: ServicesDep, principal: PrincipalDep, alert_id: FromPath[str]
    ) -> AlertOut:
        service = AlertService(svc.stores.app)
        return alert_out(service.rule(principal.tenant_id, _id("alertId", alert_id)))

    @put(
        "/{alert_id:str}",
        guards=[requires(Scope.ADMIN)],
        responses=error_responses(400, 401, 403, 404, 409, 422),
    )
    async def replace_alert(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        alert_id: FromPath[str],
        data: JSONBody[AlertReplacement],
    ) -> AlertOut:
        """Replace the whole alert: every field is required (``null`` where it has none);
        ``enabled: false`` and a threshold of 0 are values like any other."""
        target = _id("alertId", alert_id)
        service = AlertService(svc.stores.app)

        def replace() -> AlertOut:
            spec = _spec(service, principal, data)
            return alert_out(service.replace(principal.tenant_id, target, spec))

        return await anyio.to_thread.run_sync(replace)

    @delete(
        "/{alert_id:str}",
        guards=[requires(Scope.ADMIN)],
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 404, 409, 422),
    )
    def delete_alert(
        self, svc: ServicesDep, principal: PrincipalDep, alert_id: FromPath[str]
    ) -> None:
        """Delete the alert; its open incidents resolve as soon as the worker sees it."""
        AlertService(svc.stores.app).delete(principal.tenant_id, _id("alertId", alert_id))

    @get(
        "/{alert_id:str}/incidents",
        guards=[requires(Scope.READ)],
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 404, 422),
    )
    def list_incidents(
        self, svc: ServicesDep, principal: PrincipalDep, alert_id: FromPath[str]
    ) -> IncidentPage:
        """The alert's incidents, latest period first (at most 1,000)."""
        target = _id("alertId", alert_id)
        AlertService(svc.stores.app).rule(principal.tenant_id, target)
        rows = svc.stores.views.alerts.incidents(principal.tenant_id, target)
        return IncidentPage([incident_out(r) for r in rows])

    @post(
        "/{alert_id:str}/incidents/{incident_id:str}/acknowledge",
        status_code=200,
        guards=[requires(Scope.ADMIN)],
        responses=error_responses(400, 401, 403, 404, 409, 422),
    )
    async def acknowledge_incident(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        alert_id: FromPath[str],
        incident_id: FromPath[str],
        data: JSONBody[AcknowledgeIn | None] = None,
    ) -> IncidentOut:
        """Acknowledge an open incident (again: no change). It stays open until resolved."""
        alert, incident = _id("alertId", alert_id), _id("incidentId", incident_id)
        actor = actor_of(principal, data.actor if data is not None else None)
        service = AlertService(svc.stores.app)
        acknowledged = await anyio.to_thread.run_sync(
            lambda: service.acknowledge(principal.tenant_id, alert, incident, actor)
        )
        return incident_out(acknowledged)
